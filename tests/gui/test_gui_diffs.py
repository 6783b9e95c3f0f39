"""The pure parts of the merge and ticket views (no window): a diff split per file with its
line counts, a repair spawn's editable diagnosis reaching the typed payload."""
from __future__ import annotations

from gui.diffs import file_stats, parsed, split_files
from gui.records import DiffPick
from gui.dialogs.approval import approval_fields, approval_payload
from gui.records import ApprovalEdit
from models import ApprovalRequest, SpawnPayload

DIFF = """diff --git a/src/a.py b/src/a.py
index 1..2 100644
--- a/src/a.py
+++ b/src/a.py
@@ -1,2 +1,2 @@
-def f(:
+def f():
     return 1
diff --git a/docs/b c.md b/docs/b c.md
new file mode 100644
--- /dev/null
+++ b/docs/b c.md
@@ -0,0 +1,2 @@
+# b
+--- not a header, a markdown rule
"""


def test_a_diff_splits_per_file_with_its_counts():
    lines, starts = split_files(DIFF)
    assert starts == {"src/a.py": 0, "docs/b c.md": 8}
    assert lines[starts["docs/b c.md"]].startswith("diff --git")
    assert file_stats(lines, starts) == {"src/a.py": (1, 1), "docs/b c.md": (2, 0)}
    assert split_files("") == ([], {})


def repair_request(attempt: int = 2) -> ApprovalRequest:
    return ApprovalRequest(kind="spawn", title="Repair T-001: spawn attempt 2", stream_id="s",
                           track_id="t", ticket_id="T-001",
                           payload=SpawnPayload(prompt="p", attempt=attempt,
                                                check="✗ verify command failed",
                                                diagnosis="Tier 4: a ')' is missing"))


def test_the_person_s_diagnosis_goes_into_the_repair_s_payload():
    req = repair_request()
    fields = approval_fields(req)
    assert fields["diagnosis"] == "Tier 4: a ')' is missing"
    edit = ApprovalEdit(req, dict(fields), dict(fields))
    assert approval_payload(edit) == (None, "")          # unchanged: sent as requested
    edit.fields["diagnosis"] = "close the parenthesis"
    payload, err = approval_payload(edit)
    assert err == "" and isinstance(payload, SpawnPayload)
    assert payload.diagnosis == "close the parenthesis" and payload.attempt == 2
    assert payload.check == "✗ verify command failed"   # shown, not editable


def test_a_diff_is_parsed_once_per_text_and_a_new_one_drops_the_old_selection():
    pick = DiffPick()
    first = parsed(DIFF, pick)
    pick.selected = "docs/b c.md"
    again = parsed(DIFF, pick)
    assert again[0] is first[0] and pick.selected == "docs/b c.md"    # not split again
    other = "diff --git a/z b/z\n+++ b/z\n+1\n"
    _lines, starts, stats = parsed(other, pick)
    assert starts == {"z": 0} and stats == {"z": (1, 0)} and pick.selected == ""
