"""The model client layer behind the door `ai_client.py`: providers (offline, function,
Gemini), agent sessions with the tool loop and the ending rules, the comms log and accounting,
the secret scrubber.

Modules: base (types, Finish, errors), endings (what each ending leads to), offline, function,
gemini + gemini_wire (google-genai, imported lazily inside GeminiProvider only), comms
(CommsLog), session (AgentSession), structured (Tier 1/2 JSON), secrets (Scrubber), factory.

Imports point down only: models, events. Importing this package imports nothing else (and
never google.genai); each module says which threads use it and what state it owns.
"""
