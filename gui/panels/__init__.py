"""The dockable windows, each a plain function `panel(app)` of the `AppState`. GUI thread only;
no state at package level."""
