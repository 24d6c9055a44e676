"""``python -m cli`` runs the ``homecare`` command.

A Ctrl-C (or SIGTERM, which takes its path) that the command handled ends it with 130.
But under ``python -m``, CPython treats a ``KeyboardInterrupt`` that ever left an
``exec()``/``eval()`` of a source string as uncaught, even after it was caught: imports
make such calls (``dataclasses`` and ``namedtuple`` generate their methods that way), and
a signal that lands in one (as in the certification kit, whose first readiness probe
imports ``httpcore``) made the command, already stopped cleanly, kill itself with
SIGINT at exit (status -2, no traceback). Every ``exec()`` of a source string clears
that mark when it starts (CPython's ``run_eval_code_obj``), so one empty ``exec`` on the
way out clears it. An interrupt that really is uncaught still ends the process with
SIGINT, as Python intends.
"""

from cli.main import app

try:
    app()
finally:
    exec("")  # clears CPython's stale uncaught-Ctrl-C mark (see above)
