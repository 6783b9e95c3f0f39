"""The tools layer behind the ``tools.py`` door: worker tools, the path sandbox, the command
sandbox (bubblewrap) and git.

Modules, lowest first (each imports only those above it):

- ``errors``    the exceptions every tool raises;
- ``specs``     the tool specs offered to models, ``ToolResult``, argument validation;
- ``paths``     the path sandbox: lexical checks and the fd-based walk (``PathWalker``);
- ``files``     read_file, list_dir, write_file, edit_file;
- ``search``    search_files on a linear-time regex engine (RE2);
- ``preview``   the diff the approval dialog shows;
- ``sandbox``   bubblewrap: the probe and the command line of a sandboxed command;
- ``shell``     run_shell: start, collect output, timeout, cancel, kill the whole tree;
- ``workspace`` the ``Workspace`` facade;
- ``git``       ``GitRepo``: one commit per ticket (the shared-directory mode);
- ``worktrees`` (+ ``_model``, ``_dirs``, ``_merge``) ``TrackBranches``: a git worktree per
  ticket on ``clutch-ticket/<track>/<ticket>``, merged into ``clutch/<track>`` without
  touching the person's tree, conflicts kept as data, the track merged with consent;
- ``rules``     the shell approval rules (``evaluate``): allow, ask or deny, and why;
- ``repomap/``  the repository map: outlines, import graph, ranking, a token budget.

Nothing here holds module-level mutable state; each module's docstring names its threads.
Import from ``tools`` (the door) outside this package.
"""
