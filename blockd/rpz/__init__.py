"""RPZ out: the host-level policy as a Response Policy Zone for existing resolvers.

Its own room (DESIGN.md): builds zones from the stored, re-verified plain lists on each
policy activation and serves them over AXFR/IXFR with NOTIFY and TSIG, from a listener of
its own, in the supervisor process. Ingesting RPZ (zones as lists) is not here.
"""
