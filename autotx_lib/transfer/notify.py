"""E-mail to users and the admin, through the journal's outbox, over SMTP.

Every notification is rendered from a Jinja2 template (``templates/<name>.txt`` beside
this module, first line ``Subject: ...``; a file of the same name in
``email.templates_dir`` replaces it) and *queued* in the journal's outbox. Nothing is
sent while rendering: :meth:`Notifier.flush` hands due mails to the SMTP server, and a
failed delivery stays in the outbox with its error and the time of the next attempt
(exponential backoff, up to an hour), so a mail is never lost silently when the server
is down.

Admin mails are rate limited per kind, as AutoTx's ``*NotificationDelta`` settings:
``admin_notification_delta_minutes`` for quarantines, destination problems, start-up
reports and unclean shutdowns; ``storage_notification_delta_minutes`` for low disk
space; ``grace_notification_delta_minutes`` for the grace summary. A quarantine held
back by the rate limit is not dropped: it is listed in the next quarantine mail, or
mailed on its own by :meth:`Notifier.flush` once the period is over.

Addresses are parsed with :mod:`email.headerregistry` (:mod:`autotx_lib.addresses`): a
user whose folder name cannot be made into exactly one plain address (a comma, a second
``@``, a line separator, non-ASCII) gets no mail, and the admin is told once. A message
that cannot be built or encoded is marked as given up in the outbox with the reason, and
the mails after it go out as usual: one bad message never blocks the outbox.

The SMTP password comes from the environment variable ``email.password_env``, the file
``email.password_file``, or ``email.password``; it is never written to the journal, a
log record or an exception message.

Examples
--------
>>> notifier = Notifier(config, journal)                        # doctest: +SKIP
>>> notifier.transfer_finished(journal.dataset(7), ["img_000.tif", "img_001.tif"])  # doctest: +SKIP
12
>>> notifier.flush()                                            # doctest: +SKIP
1
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.errors
import email.utils
import logging
import os
import shutil
import smtplib
import socket
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2

from autotx_lib import __version__
from autotx_lib import journal as J
from autotx_lib.addresses import address_for_user, parse_address
from autotx_lib.config import Config, EmailSettings
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer.copy import CHECK_TOOL
from autotx_lib.transfer.destinations.free_space import last_free_space
from autotx_lib.transfer.grace import GraceReport, grace_report
from autotx_lib.units import human_bytes, human_duration

log = logging.getLogger("autotx.notify")

SMTP_TIMEOUT_SECONDS = 20.0
RETRY_BASE_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
# a message that can never be sent keeps its row (and reason) but is due only in a century
NEVER_SECONDS = 100 * 365 * 86400.0
MAX_FIRST_FILES = 20
TEMPLATES = Path(__file__).with_name("templates")

# outbox kinds (at most 32 characters)
TRANSFER_FINISHED = "transfer-finished"
TRANSFER_INTERRUPTED = "transfer-interrupted"
QUARANTINED = "admin-quarantine"
DESTINATION_PROBLEM = "admin-destination"
LOW_SPACE = "admin-low-space"
GRACE = "admin-grace"
STARTUP = "admin-startup"
UNCLEAN_SHUTDOWN = "admin-unclean-shutdown"
BAD_ADDRESS = "admin-bad-address"
DEFERRED_QUARANTINES = "notify.deferred_quarantines"  # journal setting: dataset ids held back


class _Unsendable(Exception):
    """This one message can never be sent as it is (the message says why)."""


class _SenderUnusable(Exception):
    """``email.sender`` (or the default from ``host_alias``) is not one address."""


class _PasswordUnavailable(Exception):
    """The configured password source cannot be read (the message names the source only)."""


def smtp_password(settings: EmailSettings) -> str | None:
    """The SMTP password from ``password_env``, ``password_file`` or ``password``, in that order.

    Raises ``_PasswordUnavailable`` (a message naming the source, never a secret) when the
    variable is not set or the file cannot be read.
    """
    if settings.password_env:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise _PasswordUnavailable(f"the environment variable {settings.password_env} "
                                       "(email.password_env) is not set")
        return value
    if settings.password_file:
        try:
            return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise _PasswordUnavailable(f"the password file {settings.password_file} "
                                       f"(email.password_file) cannot be read: {reason}") from None
    if settings.password is not None:
        return settings.password.get_secret_value()
    return None


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _connect(settings: EmailSettings, timeout: float = SMTP_TIMEOUT_SECONDS) -> smtplib.SMTP:
    """An SMTP connection after EHLO, STARTTLS and login as configured."""
    password = smtp_password(settings) if settings.user else None
    host, port = settings.smtp_host or "", settings.smtp_port
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        smtp.ehlo()
        if settings.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.user:
            smtp.login(settings.user, password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


# the server refused one mail and the connection stays usable
_REFUSALS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)


def _describe(error: BaseException, settings: EmailSettings, secret: str | None) -> str:
    """A one-line explanation of an SMTP failure, with what to check; never the password."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if isinstance(error, _PasswordUnavailable):
        text = f"no SMTP password: {error}"
    elif isinstance(error, _SenderUnusable):
        text = str(error)
    elif isinstance(error, socket.gaierror):
        text = f"cannot resolve the SMTP host {settings.smtp_host!r} ({error.strerror}); check " \
               "email.smtp_host"
    elif isinstance(error, ConnectionRefusedError):
        text = f"the SMTP server {where} refused the connection (nothing listening?); check " \
               "email.smtp_host and email.smtp_port"
    elif isinstance(error, TimeoutError):
        text = f"the SMTP server {where} did not answer in time; check the host, the port " \
               "and the firewall"
    elif isinstance(error, smtplib.SMTPAuthenticationError):
        text = f"the SMTP server {where} refused the login of {settings.user!r} " \
               f"({error.smtp_code}); check email.user and the password"
    elif isinstance(error, smtplib.SMTPNotSupportedError):
        text = f"the SMTP server {where} does not support what was asked ({error}); check " \
               "email.security"
    elif isinstance(error, ssl.SSLError | ssl.CertificateError):
        text = f"TLS with {where} failed ({error.__class__.__name__}: {error}); check " \
               "email.security (starttls or ssl) and the server's certificate"
    elif isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{r}: {c} {m.decode(errors='replace') if isinstance(m, bytes) else m}"
                            for r, (c, m) in error.recipients.items())
        text = f"the SMTP server {where} refused the recipient(s): {refused}"
    elif isinstance(error, smtplib.SMTPResponseException):
        message = error.smtp_error.decode(errors="replace") if isinstance(
            error.smtp_error, bytes) else str(error.smtp_error)
        text = f"the SMTP server {where} answered {error.smtp_code} {message}"
    else:
        text = f"SMTP with {where} failed: {error.__class__.__name__}: {error}"
    return _scrub(text, secret)


def check_smtp(config: Config) -> str | None:
    """Try the configured SMTP server: connect, EHLO, STARTTLS and login as configured.

    Returns
    -------
    problem : str or None
        A one-line description of what failed and what to check; None when everything
        worked, or when no ``email.smtp_host`` is configured (no mail at all).
    """
    settings = config.email
    if not settings.smtp_host:
        return None
    secret = None
    try:
        secret = smtp_password(settings) if settings.user else None
        smtp = _connect(settings)
    except (OSError, smtplib.SMTPException, _PasswordUnavailable, ValueError) as error:
        return _describe(error, settings, secret)
    with contextlib.suppress(OSError, smtplib.SMTPException):
        smtp.quit()
    return None


# --- formatting helpers ----------------------------------------------------------------


def _local(value: dt.datetime | None) -> str:
    if value is None:
        return "(unknown)"
    return f"{value.replace(tzinfo=dt.UTC).astimezone():%Y-%m-%d %H:%M:%S %Z}"


def _disk(label: str, path: Path) -> dict[str, str]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as error:
        return {"label": label, "path": str(path), "text": f"unavailable ({error.strerror})"}
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    return {"label": label, "path": str(path), "text": f"{human_bytes(usage.free)} free of "
            f"{human_bytes(usage.total)} ({percent:.0f} %)"}


class Notifier:
    """Renders notifications and queues them in the journal's outbox; :meth:`flush` sends.

    Parameters
    ----------
    config : Config
        ``config.email`` holds the SMTP settings, switches, rate limits and addresses.
    journal : Journal
        The outbox, rate-limit memory and event log.

    Notes
    -----
    Every method returns the outbox id of the queued mail, or None when nothing was
    queued: no ``smtp_host``, the switch for that kind of mail is off, no address is
    known, or the rate limit holds the mail back.
    """

    def __init__(self, config: Config, journal: Journal):
        self.config = config
        self.journal = journal
        self.settings = config.email
        self.enabled = bool(self.settings.smtp_host)
        self._packaged = self._environment(None)
        self._environment_used = self._environment(self.settings.templates_dir)

    # --- templates ----------------------------------------------------------------------

    @staticmethod
    def _environment(override: Path | None) -> jinja2.Environment:
        loaders: list[jinja2.BaseLoader] = []
        if override is not None:
            loaders.append(jinja2.FileSystemLoader(str(override)))
        loaders.append(jinja2.FileSystemLoader(str(TEMPLATES)))
        return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=False,
                                  undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

    def render(self, name: str, **context: Any) -> tuple[str, str]:
        """Render template ``name`` (without ``.txt``); returns (subject, body).

        A template from ``templates_dir`` that fails (syntax error, unknown variable, no
        ``Subject:`` line) is replaced by the packaged one, and a warning event says so once.
        """
        context = {"version": __version__, "host": self.config.host_alias,
                   "destination_alias": self.config.destination_alias, **context}
        try:
            return self._split(self._environment_used.get_template(f"{name}.txt").render(context))
        except (jinja2.TemplateError, ValueError) as error:
            if self.settings.templates_dir is None:
                raise
            message = (f"the mail template {name}.txt in {self.settings.templates_dir} cannot "
                       f"be used ({error.__class__.__name__}: {error}); the packaged template "
                       "is used instead")
            if not self.journal.has_event("mail-template", message):
                self.journal.log("warning", "mail-template", message)
                log.warning(message)
            return self._split(self._packaged.get_template(f"{name}.txt").render(context))

    def _split(self, text: str) -> tuple[str, str]:
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError("the first line must be 'Subject: ...'")
        subject = " ".join(first[len("Subject:"):].split())
        return self.settings.subject_prefix + subject, body.lstrip("\n")

    # --- addresses, switches, rate limits -----------------------------------------------

    def user_address(self, user: str) -> str | None:
        """The user's address from ``user_addresses``, else ``user_address_pattern``.

        None (and a warning event, once per user) when neither gives one. None too when
        the address cannot be made safely (the folder name would add a recipient or break
        the header): a warning event and one mail to the admin say so, once per user.
        """
        mapped = self.settings.user_addresses.get(user)
        pattern = self.settings.user_address_pattern
        if mapped is None and not pattern:
            message = (f"no e-mail address for user {user!r}: add it to email.user_addresses "
                       "or set email.user_address_pattern; no user mail is sent to them")
            if not self.journal.has_event("mail-no-address", message):
                self.journal.log("warning", "mail-no-address", message)
                log.warning(message)
            return None
        try:
            address = parse_address(mapped) if mapped is not None else \
                address_for_user(user, pattern or "")
        except (ValueError, KeyError, IndexError) as error:
            source = "email.user_addresses" if mapped is not None else \
                f"email.user_address_pattern {pattern!r}"
            self._unsafe_address(user, f"{source} gives no safe address: {error}")
            return None
        return str(address)

    def _unsafe_address(self, user: str, reason: str) -> None:
        message = (f"no mail is sent to user {user!r}: {reason}; give them an address in "
                   "email.user_addresses (or rename the folder)")
        if self.journal.has_event("mail-bad-address", message):
            return
        self.journal.log("warning", "mail-bad-address", message)
        log.warning(message)
        if self._admin_ok():
            self._queue(BAD_ADDRESS, self.settings.admin or "", "unsafe_address",
                        user=repr(user), reason=reason, incoming=str(self.config.incoming))

    def _rate_limited(self, kind: str, delta_minutes: int) -> bool:
        if delta_minutes <= 0:
            return False
        last = self.journal.last_mail_of_kind(kind)
        return last is not None and utcnow() - last.created_at < dt.timedelta(
            minutes=delta_minutes)

    def _admin_ok(self) -> bool:
        return self.enabled and self.settings.send_admin_notification and bool(self.settings.admin)

    def _user_ok(self) -> bool:
        return self.enabled and self.settings.send_transfer_notification

    def _queue(self, kind: str, recipient: str, template: str, **context: Any) -> int:
        subject, body = self.render(template, **context)
        mail_id = self.journal.queue_mail(kind, recipient, subject, body)
        log.info("queued mail %d (%s) to %s: %s", mail_id, kind, recipient, subject)
        return mail_id

    def _queue_admin(self, kind: str, delta_minutes: int, template: str,
                     **context: Any) -> int | None:
        if not self._admin_ok() or self._rate_limited(kind, delta_minutes):
            return None
        return self._queue(kind, self.settings.admin or "", template,
                           delta_minutes=delta_minutes, **context)

    def _queue_list(self) -> list:
        return self.journal.datasets_in(J.ACTIVE_STATES)

    # --- user mails ---------------------------------------------------------------------

    def transfer_finished(self, dataset_row, first_files: list[str]) -> int | None:
        """Tell the user their dataset arrived: destination, files, size, duration, rate,
        the first file names and where the manifest is."""
        if not self._user_ok():
            return None
        recipient = self.user_address(dataset_row.user)
        if recipient is None:
            return None
        seconds = None
        if dataset_row.started_at is not None and dataset_row.finished_at is not None:
            seconds = (dataset_row.finished_at - dataset_row.started_at).total_seconds()
        rate = (f"{human_bytes(dataset_row.total_bytes / seconds)}/s" if seconds
                else "(not measured)")
        shown = list(first_files)[:MAX_FIRST_FILES]
        manifest = dataset_row.manifest_path or "(none recorded)"
        copies = self.journal.deliveries_of(dataset_row.id)
        others = [(d.destination, d.dest_path if d.state == "delivered" else
                   "not yet: it gets its copy later (optional destination)")
                  for d in copies[1:]] if len(copies) > 1 else []
        return self._queue(
            TRANSFER_FINISHED, recipient, "transfer_finished", dataset=dataset_row,
            destination=dataset_row.dest_path, files=dataset_row.total_files,
            size=human_bytes(dataset_row.total_bytes),
            duration=human_duration(seconds) if seconds is not None else "(unknown)",
            rate=rate, finished=_local(dataset_row.finished_at), first_files=shown,
            more_files=max(dataset_row.total_files - len(shown), 0), manifest=manifest,
            manifest_name=Path(manifest).name, algorithm=dataset_row.algorithm,
            check_command=CHECK_TOOL.get(dataset_row.algorithm, "sha256sum -c"),
            grace_path=dataset_row.final_path, grace_days=self.config.grace_period_days,
            other_destinations=others)

    def transfer_interrupted(self, dataset_row) -> int | None:
        """Tell the user the transfer of their dataset stopped with the service (and resumes)."""
        if not self._user_ok():
            return None
        recipient = self.user_address(dataset_row.user)
        if recipient is None:
            return None
        return self._queue(
            TRANSFER_INTERRUPTED, recipient, "transfer_interrupted", dataset=dataset_row,
            files=dataset_row.total_files, copied_files=dataset_row.copied_files,
            size=human_bytes(dataset_row.total_bytes),
            copied_size=human_bytes(dataset_row.copied_bytes))

    # --- admin mails --------------------------------------------------------------------

    def dataset_quarantined(self, dataset_row) -> int | None:
        """Tell the admin a dataset went to quarantine (with the reason).

        Within the rate limit nothing is queued: the dataset is remembered in the journal
        and listed in the next quarantine mail (or in the one :meth:`flush` queues when the
        period is over).
        """
        if not self._admin_ok():
            return None
        delta = self.settings.admin_notification_delta_minutes
        if self._rate_limited(QUARANTINED, delta):
            held = self.journal.get_setting(DEFERRED_QUARANTINES) or []
            if dataset_row.id not in held:
                self.journal.set_setting(DEFERRED_QUARANTINES, [*held, dataset_row.id])
            self.journal.log("info", "mail-deferred", f"{dataset_row.user}/{dataset_row.name}: "
                             "the quarantine mail is held back by the rate limit "
                             f"(email.admin_notification_delta_minutes = {delta}); it will be "
                             "listed in the next quarantine mail", dataset_row.id)
            return None
        earlier = [r for r in self._held_quarantines() if r.id != dataset_row.id]
        mail_id = self._queue(QUARANTINED, self.settings.admin or "", "dataset_quarantined",
                              dataset=dataset_row, earlier=earlier,
                              incoming=str(self.config.incoming))
        self.journal.set_setting(DEFERRED_QUARANTINES, [])
        return mail_id

    def _held_quarantines(self) -> list:
        """Journal rows of the quarantines held back by the rate limit."""
        held = set(self.journal.get_setting(DEFERRED_QUARANTINES) or [])
        if not held:
            return []
        return [r for r in self.journal.datasets_in([J.ERROR]) if r.id in held]

    def _queue_deferred_quarantines(self) -> int | None:
        if not self._admin_ok() or self._rate_limited(
                QUARANTINED, self.settings.admin_notification_delta_minutes):
            return None
        rows = self._held_quarantines()
        if not rows:
            return None
        mail_id = self._queue(QUARANTINED, self.settings.admin or "", "deferred_quarantines",
                              rows=rows, incoming=str(self.config.incoming))
        self.journal.set_setting(DEFERRED_QUARANTINES, [])
        return mail_id

    def destination_problem(self, reason: str) -> int | None:
        """Tell the admin the destination cannot take data (once per rate-limit period)."""
        return self._queue_admin(DESTINATION_PROBLEM,
                                 self.settings.admin_notification_delta_minutes,
                                 "destination_problem", reason=reason,
                                 destination=self.config.primary_shown,
                                 queue=self._queue_list())

    def low_space(self, path, free_mb: float, threshold_mb: float) -> int | None:
        """Tell the admin a watched folder is low on space (storage rate limit)."""
        return self._queue_admin(LOW_SPACE, self.settings.storage_notification_delta_minutes,
                                 "low_space", path=str(path), free_mb=float(free_mb),
                                 threshold_mb=float(threshold_mb))

    def grace_summary(self, report: GraceReport) -> int | None:
        """Tell the admin which originals are past the grace period (grace rate limit).

        Nothing is queued when none is expired.
        """
        if not report.expired:
            return None
        expired_by_user: dict[str, list] = {}
        for entry in report.expired:
            expired_by_user.setdefault(entry.user, []).append(entry)
        return self._queue_admin(
            GRACE, self.settings.grace_notification_delta_minutes, "grace_summary",
            report=report, expired_by_user=dict(sorted(expired_by_user.items())),
            sizes={e.path: human_bytes(e.size_bytes) for e in report.entries},
            expired_size=human_bytes(report.expired_bytes),
            total_size=human_bytes(report.total_bytes), done_folder=report.done_folder)

    def startup_report(self) -> int | None:
        """Tell the admin the agent started: version, config summary, disk space, queue,
        grace status (admin rate limit, so a service restarting in a loop does not flood)."""
        if not self._admin_ok() or self._rate_limited(
                STARTUP, self.settings.admin_notification_delta_minutes):
            return None
        cfg = self.config
        journal_url = self.journal.engine.url.render_as_string(hide_password=True)
        settings = [
            ("incoming", cfg.incoming), ("managed", cfg.managed),
            ("destination", f"{cfg.primary_shown} ({cfg.destination_alias})"),
            ("journal", journal_url),
            ("verification", f"{cfg.verify.algorithm}, {cfg.verify.mode}"),
            ("copy workers", cfg.copy_.workers),
            ("quiet period", f"{cfg.readiness.quiet_seconds:g} s"
             + (f", marker {cfg.readiness.marker_file}" if cfg.readiness.marker_file else "")),
            ("grace period", f"{cfg.grace_period_days} days"),
            ("time windows", ", ".join(cfg.gate.time_windows) or "any time"),
            ("user mail", "on" if cfg.email.send_transfer_notification else "off"),
            ("smtp", f"{cfg.email.smtp_host}:{cfg.email.smtp_port} ({cfg.email.security})"),
        ]
        disks = [_disk("incoming", cfg.incoming), _disk("managed", cfg.managed)]
        disks += self._destination_disks()
        disks += [_disk("watched", check.path) for check in cfg.space_monitoring]
        try:
            grace = grace_report(cfg, self.journal)
        except OSError as error:  # the report must not stop the start-up
            log.warning("grace report for the start-up mail failed: %s", error)
            grace = None
        grace = grace or GraceReport(str(cfg.managed / "done"), cfg.grace_period_days,
                                 dt.datetime.now())
        return self._queue(STARTUP, self.settings.admin or "", "startup_report",
                           settings=settings, disks=disks, queue=self._queue_list(),
                           grace=grace, grace_size=human_bytes(grace.total_bytes))

    def _destination_disks(self) -> list[dict[str, str]]:
        """Each destination's free space: a folder's now, a share's as the agent last
        measured it (it is not logged on to for a mail)."""
        cfg = self.config
        if not cfg.destinations:
            return [_disk("destination", cfg.destination)] if cfg.destination is not None else []
        measured = last_free_space(self.journal)
        disks = []
        for target in cfg.targets:
            if target.local_path is not None:
                disks.append(_disk(target.name, target.local_path))
                continue
            last = measured.get(target.name)
            disks.append({"label": target.name, "path": target.url, "text": (
                f"{human_bytes(last.free_bytes)} free (measured {_local(last.at)})" if last
                else "not measured yet (a share is asked at the agent's hourly housekeeping)")})
        return disks

    def unclean_shutdown(self, previous_session_row) -> int | None:
        """Tell the admin the previous agent session ended without a clean stop."""
        return self._queue_admin(UNCLEAN_SHUTDOWN, self.settings.admin_notification_delta_minutes,
                                 "unclean_shutdown", session=previous_session_row,
                                 started=_local(previous_session_row.started_at),
                                 heartbeat=_local(previous_session_row.heartbeat_at))

    def needs_attention(self, kind: str, summary: str, details: str) -> int | None:
        """Tell the admin about something that needs a human (rate limited per ``kind``)."""
        return self._queue_admin(f"admin-{kind}"[:32],
                                 self.settings.admin_notification_delta_minutes,
                                 "needs_attention", summary=summary, details=details)

    # --- sending ------------------------------------------------------------------------

    def _sender(self) -> Address:
        text = self.settings.sender or f"autotx@{self.config.host_alias}"
        try:
            return parse_address(text)
        except ValueError as error:
            raise _SenderUnusable(f"the sender address {text!r} cannot be used ({error}); "
                                  "set email.sender to one address") from None

    def _message(self, mail, sender: Address) -> tuple[EmailMessage, str]:
        """The message of an outbox row and its one envelope recipient.

        Raises ``_Unsendable`` when the row can never become a message (a recipient that
        is not exactly one address, a header that cannot be written).
        """
        try:
            recipient = parse_address(mail.recipient)
            message = EmailMessage()
            message["From"] = sender
            message["To"] = recipient
            message["Subject"] = mail.subject
            message["Date"] = email.utils.format_datetime(
                mail.created_at.replace(tzinfo=dt.UTC).astimezone())
            message["Message-ID"] = email.utils.make_msgid("autotx")
            message["X-Autotx-Kind"] = mail.kind
            message.set_content(mail.body)
        except (ValueError, IndexError, email.errors.MessageError) as error:
            raise _Unsendable(f"the message cannot be built ({error})") from None
        return message, recipient.addr_spec

    def _failed(self, mail, text: str) -> None:
        delay = min(RETRY_BASE_SECONDS * 2 ** mail.attempts, RETRY_MAX_SECONDS)
        self.journal.mail_failed(mail.id, text, delay)

    def _given_up(self, mail, text: str) -> None:
        self.journal.mail_failed(mail.id, f"given up, never retried: {text}", NEVER_SECONDS)

    def flush(self) -> int:
        """Send the due mails of the outbox; returns how many the SMTP server accepted.

        Failures never raise. When the server cannot be reached every due mail stays in
        the outbox with the error and a next attempt (60 s, doubling, at most an hour).
        A mail the server refuses waits for its own next attempt; a mail that can never
        be sent (its recipient is not one address, a header cannot be written, the server
        lacks SMTPUTF8) is given up with the reason, and the mails after it go out as
        usual. One warning event per flush says what failed. A quarantine held back by the
        rate limit is queued first when its period is over.
        """
        if not self.enabled:
            return 0
        self._queue_deferred_quarantines()
        pending = self.journal.pending_mail()
        if not pending:
            return 0
        secret = None
        try:
            sender = self._sender()
            secret = smtp_password(self.settings) if self.settings.user else None
        except (_PasswordUnavailable, _SenderUnusable) as error:
            self._all_failed(pending, _describe(error, self.settings, secret))
            return 0
        sent, problems = self._send_each(sender, pending, secret)
        if problems:
            self._log_failure("mail not sent: " + "; ".join(problems))
        return sent

    def _all_failed(self, mails: list, text: str) -> None:
        for mail in mails:
            self._failed(mail, text)
        self._log_failure(f"{len(mails)} mail(s) not sent, kept in the outbox for a later "
                          f"attempt: {text}")

    def _send_each(self, sender: Address, pending: list,
                   secret: str | None) -> tuple[int, list[str]]:
        """Send ``pending``, each on its own merits; returns (sent, one line per problem).

        A connection the server closed (after a mail it dropped) is opened again for the
        next mail, so the mail that broke it cannot hold the others back.
        """
        sent = 0
        problems: list[str] = []
        smtp: smtplib.SMTP | None = None
        try:
            for index, mail in enumerate(pending):
                where = f"mail {mail.id} to {mail.recipient!r}"
                try:
                    message, recipient = self._message(mail, sender)
                except _Unsendable as error:
                    self._given_up(mail, str(error))
                    problems.append(f"{where} given up: {error}")
                    continue
                if smtp is None:
                    try:
                        smtp = _connect(self.settings)
                    except (OSError, smtplib.SMTPException, _PasswordUnavailable,
                            ValueError) as error:
                        self._all_failed(pending[index:], _describe(error, self.settings, secret))
                        break
                try:
                    smtp.send_message(message, to_addrs=[recipient])
                except (smtplib.SMTPNotSupportedError, ValueError,
                        email.errors.MessageError) as error:  # never sendable: give it up
                    text = _describe(error, self.settings, secret)
                    self._given_up(mail, text)
                    problems.append(f"{where} given up: {text}")
                except (OSError, smtplib.SMTPException) as error:  # refused, or cut off
                    text = _describe(error, self.settings, secret)
                    self._failed(mail, text)
                    problems.append(f"{where} kept for a later attempt: {text}")
                    if not isinstance(error, _REFUSALS) or smtp.sock is None:
                        _close(smtp)  # the next mail gets a new connection
                        smtp = None
                else:
                    self.journal.mail_sent(mail.id)
                    sent += 1
        finally:
            if smtp is not None:
                _close(smtp)
        return sent, problems

    def _log_failure(self, message: str) -> None:
        self.journal.log("warning", "mail-failed", message)
        log.warning(message)


__all__ = ["Notifier", "check_smtp", "smtp_password"]
