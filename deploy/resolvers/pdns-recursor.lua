-- PowerDNS Recursor (4.5 and later: rpzPrimary) taking blockd's policy zone by AXFR/IXFR with TSIG.
-- recursor.conf:   lua-config-file=/etc/powerdns/blockd-rpz.lua
--                  allow-notify-for=rpz.blockd
--                  allow-notify-from=192.0.2.53          # blockd's [rpz] listen address
-- blockd.toml:     [rpz] clients = ["<this resolver>"], notify = ["<this resolver>:53"],
--                  tsig_key_file = the key below, as `tsig-keygen -a hmac-sha256 blockd-rpz` wrote it
-- NOT YET TESTED against a running pdns_recursor (Debian's 4.8 installs here; see README).
rpzPrimary({"192.0.2.53:5301"}, "rpz.blockd", {
  policyName = "blockd",
  tsigname = "blockd-rpz",
  tsigalgo = "hmac-sha256",
  tsigsecret = "<the secret of blockd's rpz.key>",
  refresh = 300,                                   -- also the SOA refresh blockd serves
  dumpFile = "/var/lib/powerdns/rpz.blockd.zone",  -- start from the last copy after a restart
  seedFile = "/var/lib/powerdns/rpz.blockd.zone",
})
