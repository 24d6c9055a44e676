"""The ``homecare`` command: the composition root, the only package that imports every service."""
