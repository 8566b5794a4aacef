"""The ``cadence`` command line: ``cli`` parses; ``train`` (train, resume, print-config),
``inference`` (eval, transcribe) and ``verify`` (verify-resume) do the work."""
