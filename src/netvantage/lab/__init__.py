"""The emulated internet: client regions, routers and data centres in network namespaces."""
