"""The modal dialogs, each a function of the `AppState`. GUI thread only; no state at package
level."""
