"""Console routes, one module per audience; every route declares its view with ``Need``."""
