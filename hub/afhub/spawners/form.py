"""The spawn form's own parts and how a refusal reads on the hub's pages (HTML only).

* :func:`charge_select`: the "Charge to group" select. Each group offered carries what its
  quota leaves (``data-quota``); the line under the select follows the choice in the
  browser, with no request. A group where no server may start is labelled ("full: 2 of 2
  servers") and disabled, unless it is the person's previous choice (kept, so that the
  form shows what was refused);
* :func:`native_selects`: kubespawner's selects with Bootstrap 5's ``form-select`` look
  (the dropdown arrow of the hub's own controls) instead of a text field's;
* :func:`spawn_error`, :func:`refusal_error`: an HTTP error that JupyterHub shows as its
  plain words on the spawn and spawn-pending pages (``jupyterhub_html_message``) and in the
  REST API's ``message`` (``jupyterhub_message``), not as ``HTTP 403: error (...)``; a
  refusal's reset time is marked up so that the page adds the browser's local time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from tornado import web

from afhub.quotas.refusals import Advice
from afhub.quotas.remaining import Remaining, describe, full_label

#: the user option (spawn form field and REST ``user_options`` key) naming the group
CHARGE_OPTION = "charge_to"

#: the line under the select follows the choice; reset times get the browser's local time
_SCRIPT = """<script>
(() => {
  const select = document.getElementById("afhub-charge-to");
  const line = document.getElementById("afhub-quota-line");
  const show = () => {
    const chosen = select.options[select.selectedIndex];
    line.textContent = chosen ? chosen.dataset.quota : "";
  };
  select.addEventListener("change", show);
  show();
  for (const at of document.querySelectorAll("time.afhub-reset")) {
    const local = new Date(at.dateTime).toLocaleString([], {
      dateStyle: "medium", timeStyle: "short",
    });
    at.insertAdjacentText("afterend", ` (${local} your time)`);
  }
})();
</script>"""


@dataclass(frozen=True)
class GroupChoice:
    """A group the person may charge, and what its quota leaves (None: not known)."""

    path: str
    room: Remaining | None = None


def _option(choice: GroupChoice, selected: bool, barred: Sequence[str]) -> str:
    full = full_label(choice.room) if choice.room is not None else None
    label = choice.path
    if full:
        label += f" ({full})"
    if barred:
        label += f" (cannot pay for {', '.join(barred)})"
    quota = describe(choice.room) if choice.room is not None else ""
    flags = (" selected" if selected else "") + (" disabled" if full and not selected else "")
    return (
        f'<option value="{escape(choice.path)}" data-cannot-pay="{escape(" ".join(barred))}"'
        f' data-quota="{escape(quota)}"{flags}>{escape(label)}</option>'
    )


def charge_select(
    choices: Sequence[GroupChoice],
    selected: str | None,
    cannot_pay: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The "Charge to group" select (``choices`` in display order, ``selected`` chosen: the
    previous choice; else the first group with room), the quota line of the chosen group,
    and the script that keeps it current.

    ``cannot_pay`` maps a group to the offered profiles it may not pay for (a resource
    opened to a group is paid by that group or one below it): such options say so."""
    cannot_pay = cannot_pay or {}
    if selected not in {c.path for c in choices}:
        with_room = [c.path for c in choices if c.room is None or not full_label(c.room)]
        selected = (with_room or [c.path for c in choices] or [None])[0]
    options = "".join(_option(c, c.path == selected, cannot_pay.get(c.path) or ()) for c in choices)
    return (
        '<div class="mb-3 afhub-charge">'
        '<label class="form-label" for="afhub-charge-to">Charge to group</label>'
        f'<select class="form-select" id="afhub-charge-to" name="{CHARGE_OPTION}">'
        f"{options}</select>"
        '<p class="form-text mb-0" id="afhub-quota-line"></p>'
        '<p class="form-text">A resource opened to a group is paid by that group or '
        "a group below it.</p></div>" + _SCRIPT
    )


def native_selects(html: str) -> str:
    """kubespawner's form with Bootstrap 5 selects (``form-select``: the dropdown arrow)."""
    return html.replace(
        'class="form-control js-profile-option-select"',
        'class="form-select js-profile-option-select"',
    )


def refusal_html(advice: Advice) -> str:
    """``advice.text`` escaped, its reset time in a ``<time>`` element the page localises."""
    html = escape(advice.text)
    if advice.resets_at is not None and advice.reset_text:
        stamp = advice.resets_at.isoformat()
        html = html.replace(
            escape(advice.reset_text),
            f'<time class="afhub-reset" datetime="{stamp}">{escape(advice.reset_text)}</time>',
            1,
        )
    return html


def spawn_error(status: int, text: str, html: str | None = None) -> web.HTTPError:
    """An HTTP error that JupyterHub shows as ``text`` alone: the REST API's ``message``
    and progress events (``jupyterhub_message``), the spawn and spawn-pending pages
    (``jupyterhub_html_message``, ``text`` escaped unless ``html`` is given)."""
    error = web.HTTPError(status, text)
    error.jupyterhub_message = text
    error.jupyterhub_html_message = escape(text) if html is None else html
    return error


def refusal_error(advice: Advice, status: int = 403) -> web.HTTPError:
    """An HTTP error JupyterHub shows as ``advice``'s words alone (pages and REST API)."""
    return spawn_error(status, advice.text, refusal_html(advice))
