"""Local login: per-user passwords, safe by default.

afhub's local mode uses `NativeAuthenticator <https://native-authenticator.readthedocs.io>`_
(bcrypt-hashed passwords in the hub database, lock-out after failed attempts) rather than
password handling of its own. Self sign-up is off: accounts are made by an admin with
``afhub users add NAME``, which prints a generated password. The ``admin`` account gets a
generated password on first start, stored in ``$AFHUB_HOME/admin-password`` (mode 0600).
"""

from __future__ import annotations

from pathlib import Path

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode, default

from afhub.passwords import hash_password, read_secret_file

#: the facility administrator's account name
ADMIN_USERNAME = "admin"


class AfhubLocalAuthenticator(NativeAuthenticator):
    """NativeAuthenticator with afhub's defaults: no sign-up, a bootstrapped admin."""

    admin_password_file = Unicode(
        "",
        help="""File holding the generated password of the ``admin`` account. On start, if
        the hub has no ``admin`` account yet, one is created with this password. Set by
        ``afhub up`` to ``$AFHUB_HOME/admin-password``; empty disables the bootstrap.""",
    ).tag(config=True)

    @default("enable_signup")
    def _default_enable_signup(self) -> bool:
        return False

    @default("open_signup")
    def _default_open_signup(self) -> bool:
        return False

    @default("check_common_password")
    def _default_check_common_password(self) -> bool:
        return True

    @default("minimum_password_length")
    def _default_minimum_password_length(self) -> int:
        return 10

    @default("allowed_failed_logins")
    def _default_allowed_failed_logins(self) -> int:
        return 5

    @default("seconds_before_next_try")
    def _default_seconds_before_next_try(self) -> int:
        return 60

    @default("admin_users")
    def _default_admin_users(self) -> set[str]:
        return {ADMIN_USERNAME}

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # Only accounts in NativeAuthenticator's table (made by an admin) can log in at
        # all, so that table is the allow-list.
        return True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bootstrap_admin()

    #: NativeAuthenticator pages afhub serves. Its own ``/login`` handler is left out: it
    #: breaks on JupyterHub 6 (it uses the removed ``statsd``); JupyterHub's login page calls
    #: :meth:`authenticate` just the same. Sign-up and approval pages are served only
    #: when sign-up is enabled.
    SIGNUP_ROUTES = ("/signup", "/discard/", "/authorize", "/confirm/")

    def get_handlers(self, app):
        handlers = [(route, h) for route, h in super().get_handlers(app) if route != r"/login"]
        if not self.enable_signup:
            handlers = [
                (route, h) for route, h in handlers if not route.startswith(self.SIGNUP_ROUTES)
            ]
        return handlers

    def bootstrap_admin(self) -> None:
        """Create the ``admin`` account from the password file if it does not exist."""
        if not self.admin_password_file:
            return
        path = Path(self.admin_password_file)
        if not path.exists() or UserInfo.find(self.db, ADMIN_USERNAME) is not None:
            return
        self.db.add(
            UserInfo(
                username=ADMIN_USERNAME,
                password=hash_password(read_secret_file(path)),
                is_authorized=True,
            )
        )
        self.db.commit()
        self.log.info("Created the admin account from %s", path)
