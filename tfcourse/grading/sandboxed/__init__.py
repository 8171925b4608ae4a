"""Code that runs inside the grading sandbox, next to a learner's notebook.

This package is mounted read-only into each sandbox as a top-level package of its own, so it must import
only the standard library, torch and safetensors, never ``tfcourse`` (which is absent there). Nothing here
is trusted: a submission can rewrite any of it at run time. The grader trusts only what it decodes from
the pipe with :mod:`.wire`, and decides every score itself.
"""
