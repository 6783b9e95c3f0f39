"""The model client layer behind the door `ai_client.py`: providers (offline, function,
Gemini, OpenAI-compatible incl. Ollama, Anthropic), agent sessions with the tool loop and the
ending rules, the comms log and accounting, the secret scrubber.

Modules: base (types, Finish, errors), endings (what each ending leads to), offline, function,
gemini + gemini_wire (google-genai, imported lazily inside GeminiProvider only), openai_chat +
openai_wire (openai, lazily inside OpenAIChatProvider), anthropic_messages (anthropic, lazily
inside AnthropicProvider), sdk_retry (what those two share: retries, errors, keys), comms
(CommsLog), session (AgentSession), structured (Tier 1/2 JSON), secrets (Scrubber), factory
(make_provider, ProviderPool).

Imports point down only: models, events. Importing this package imports nothing else (and
never google.genai, openai or anthropic); each module says which threads use it and what
state it owns.
"""
