"""Device accounts and certificates on the broker: ``homecare devices``."""
