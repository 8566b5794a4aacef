"""The declarative layer: recipes (``schema``), the one place they become objects (``build``),
the built-in components and their names (``components``), and rebuilding a run from a
checkpoint (``rebuild``)."""
