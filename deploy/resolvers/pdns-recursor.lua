-- PowerDNS Recursor: blockd's policy zone, transferred by AXFR and kept by IXFR, with TSIG.
-- Tested with Debian 12's pdns-recursor 4.8 (tests/rpz/test_peers.py runs this file).
-- Install it as /etc/powerdns/blockd-rpz.lua, loaded by recursor.conf (pdns-recursor.conf
-- beside this file).
-- blockd.toml: [rpz] clients = ["<this resolver's address>"] and tsig_key_file = the key
-- below, as `tsig-keygen -a hmac-sha256 blockd-rpz` wrote it.
-- 4.8 does not act on a NOTIFY for an RPZ (it only wipes cached names under the zone's name):
-- it asks blockd for changes (IXFR) every `refresh` seconds, so a new list version applies
-- within about that (and the packet cache's TTL: see pdns-recursor.conf).
rpzPrimary({"192.0.2.53:5301"}, "rpz.blockd", {
  policyName = "blockd",
  tsigname = "blockd-rpz",
  tsigalgo = "hmac-sha256",
  tsigsecret = "<the secret of blockd's rpz.key>",
  refresh = 60,                                    -- seconds between checks for a new serial
  dumpFile = "/var/lib/powerdns/rpz.blockd.zone",  -- start from the last copy after a restart
  seedFile = "/var/lib/powerdns/rpz.blockd.zone",
})
