"""blockd: enforce signed CSAM blocklists from authorised databases at ISP resolvers."""

__version__ = "0.1.0"
