"""HTTP side of blockd: notice page, URL proxy, TLS SNI front."""
