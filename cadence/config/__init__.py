"""The declarative layer: recipes (``schema``), every section validated once (``resolve``), the
one place they become objects (``build``), the built-in components (``components``), and
rebuilding a run from a checkpoint (``rebuild``)."""
