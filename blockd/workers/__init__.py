"""Worker processes: a supervisor and N workers that answer DNS and HTTP on shared ports.

`zygote` forks workers from a clean, single-threaded copy of the process made before the
event loop starts; `worker` is what a worker runs (a QueryPath over the mapped policy);
`channel` frames the messages between them; `totals` merges what workers count; and
`supervisor` starts, tells, watches and restarts them.
"""
