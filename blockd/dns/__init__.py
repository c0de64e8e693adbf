"""DNS: the server, answer building and forwarding to upstream resolvers."""
