"""Interactive similarity viewer (issue 3): server, protocol, feature-map files."""
