"""The GUI layer of Clutch (Dear ImGui through imgui-bundle); `gui_2.py` is its door.

GUI thread only. State: none at package level (see `gui.state.AppState`).
"""
