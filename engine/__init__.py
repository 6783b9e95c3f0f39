"""The engine layer's package: the code behind `multi_agent_conductor.ConductorEngine`.

Import the engine through its door, `multi_agent_conductor`; the modules here are its parts
(each module's docstring names the thread it runs on and the state it owns).

Threads: none of its own (see the modules). State owned: none.
"""
