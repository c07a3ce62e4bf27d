"""Mail through a real SMTP server (aiosmtpd on loopback): content, outbox, retries, limits."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import importlib.util
import logging
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import select, update

from autotx_lib import journal as J
from autotx_lib.config import Config, EmailSettings
from autotx_lib.journal import Journal, outbox, utcnow
from autotx_lib.transfer import notify
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.grace import grace_report
from autotx_lib.transfer.notify import Notifier, check_smtp
from autotx_lib.units import human_bytes

from .conftest import make_dataset

SECRET = "s3cr3t-Pa55-word"

# aiosmtpd warns when AUTH is allowed without TLS; the tests do that on loopback on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """aiosmtpd handler keeping every received message (envelope recipients, parsed mail)."""

    def __init__(self):
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for rcpt, m in self.messages if address in rcpt]


class Server:
    """A real SMTP server on 127.0.0.1, started and stopped by the test."""

    def __init__(self, port: int | None = None, **options):
        self.port = port or free_port()
        self.inbox = Inbox()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_server():
    servers: list[Server] = []

    def start(port: int | None = None, **options) -> Server:
        servers.append(Server(port, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def with_email(config: Config, port: int, **settings) -> Config:
    values = {"smtp_host": "127.0.0.1", "smtp_port": port, "admin": "admin@example.org",
              "sender": "autotx@pc.example.org", "user_address_pattern": "{user}@example.org",
              **settings}
    config.email = EmailSettings(**values)
    return config


def body(message) -> str:
    return message.get_content()


def run_agent_without_mail(config: Config):
    """Run the agent with e-mail off, so a test sees only the mails it queues itself."""
    return Agent(config.model_copy(update={"email": EmailSettings()})).run(once=True)


def delivered_row(config: Config, files: dict[str, bytes], name: str = "exp1"):
    make_dataset(config.incoming, "alice", name, files)
    summary = run_agent_without_mail(config)
    assert summary.delivered, summary
    journal = Journal(config.journal_url)
    return journal, journal.dataset(summary.delivered[-1])


def make_due(journal: Journal) -> None:
    """Pretend the retry delay passed: every unsent mail is due now."""
    with journal.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.sent_at.is_(None))
                     .values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))


def age_outbox(journal: Journal, minutes: float) -> None:
    """Pretend every queued mail was queued ``minutes`` ago (rate-limit periods pass)."""
    with journal.engine.begin() as conn:
        for mail_id, created in conn.execute(select(outbox.c.id, outbox.c.created_at)).all():
            conn.execute(update(outbox).where(outbox.c.id == mail_id).values(
                created_at=created - dt.timedelta(minutes=minutes)))


# --- user mail ---------------------------------------------------------------------------


def test_transfer_finished_mail_reaches_the_user_with_every_detail(facility, smtp_server):
    server = smtp_server()
    files = {f"img_{i:03d}.tif": os.urandom(2000) for i in range(25)}
    journal, row = delivered_row(with_email(facility, server.port), files)
    first = [f.relpath for f in journal.files_of(row.id)]
    notifier = Notifier(facility, journal)

    mail_id = notifier.transfer_finished(row, first)
    assert mail_id is not None and server.inbox.messages == []  # queued, not sent yet
    assert notifier.flush() == 1

    [message] = server.inbox.to("alice@example.org")
    assert message["Subject"] == "[AutoTx] exp1 has arrived at central storage (25 files, 50.0 kB)"
    assert message["From"] == "autotx@pc.example.org"
    text = body(message)
    seconds = (row.finished_at - row.started_at).total_seconds()
    rate = f"Mean rate:      {human_bytes(row.total_bytes / seconds)}/s"
    for expected in (row.dest_path, "Files:          25", "50.0 kB", rate, "Duration:",
                     "img_000.tif", "img_019.tif", "... and 5 more", row.manifest_path,
                     "xxhsum -c autotx-manifest.xxh128", row.final_path, "30 days"):
        assert expected in text, expected
    assert "img_020.tif" not in text  # only the first 20 names
    sent = [m for m in [journal.last_mail_of_kind(notify.TRANSFER_FINISHED)] if m]
    assert sent[0].sent_at is not None and sent[0].error is None
    assert notifier.flush() == 0  # nothing sent twice


def test_transfer_interrupted_mail_tells_the_progress(facility, smtp_server):
    server = smtp_server()
    journal, row = delivered_row(with_email(facility, server.port), {"a.tif": b"x" * 3000})
    notifier = Notifier(facility, journal)
    assert notifier.transfer_interrupted(row) is not None
    assert notifier.flush() == 1
    [message] = server.inbox.to("alice@example.org")
    assert "interrupted" in message["Subject"] and "exp1" in message["Subject"]
    assert "1 of 1 files" in body(message) and "continues where it stopped" in body(message)


def test_user_address_mapping_wins_over_pattern_and_a_missing_address_is_logged_once(
        facility, smtp_server):
    server = smtp_server()
    with_email(facility, server.port, user_addresses={"alice": "a.smith@lab.example.org"})
    journal, row = delivered_row(facility, {"a.tif": b"1"})
    notifier = Notifier(facility, journal)
    notifier.transfer_finished(row, ["a.tif"])
    notifier.flush()
    assert server.inbox.to("a.smith@lab.example.org") and not server.inbox.to("alice@example.org")

    facility.email = facility.email.model_copy(update={"user_addresses": {},
                                                       "user_address_pattern": None})
    notifier = Notifier(facility, journal)
    assert notifier.transfer_finished(row, ["a.tif"]) is None
    assert notifier.transfer_interrupted(row) is None
    warnings = [e for e in journal.recent_events(50) if e.kind == "mail-no-address"]
    assert len(warnings) == 1 and "'alice'" in warnings[0].message


def test_switches_and_missing_settings_queue_nothing(facility, smtp_server):
    server = smtp_server()
    journal, row = delivered_row(with_email(facility, server.port), {"a.tif": b"1"})
    facility.email.send_transfer_notification = False
    facility.email.send_admin_notification = False
    notifier = Notifier(facility, journal)
    assert notifier.transfer_finished(row, ["a.tif"]) is None
    assert notifier.destination_problem("gone") is None
    facility.email = EmailSettings(smtp_host="127.0.0.1", smtp_port=server.port)  # no admin
    assert Notifier(facility, journal).low_space("/x", 1, 2) is None
    facility.email = EmailSettings(admin="admin@example.org",
                                   user_address_pattern="{user}@example.org")  # no smtp_host
    notifier = Notifier(facility, journal)
    assert notifier.transfer_finished(row, ["a.tif"]) is None
    assert notifier.startup_report() is None and notifier.flush() == 0
    assert journal.pending_mail() == [] and server.inbox.messages == []


# --- admin mail --------------------------------------------------------------------------


def test_every_admin_mail_arrives_with_its_facts(facility, smtp_server):
    server = smtp_server()
    with_email(facility, server.port)
    make_dataset(facility.incoming, "alice", "empty", {})  # no files: quarantined
    journal, row = delivered_row(facility, {"a.tif": b"1" * 1234})
    [quarantined] = journal.datasets_in([J.ERROR])
    notifier = Notifier(facility, journal)
    old = dt.datetime.now() + dt.timedelta(days=facility.grace_period_days + 5)

    assert notifier.dataset_quarantined(quarantined) is not None
    assert notifier.destination_problem("/mnt/storage is not mounted") is not None
    assert notifier.low_space(facility.destination, 12.0, 500.0) is not None
    assert notifier.grace_summary(grace_report(facility, journal, now=old)) is not None
    assert notifier.grace_summary(grace_report(facility, journal)) is None  # nothing expired
    assert notifier.startup_report() is not None
    assert notifier.unclean_shutdown(journal.last_session()) is not None
    assert notifier.flush() == 6

    mails = {m["X-Autotx-Kind"]: m for m in server.inbox.to("admin@example.org")}
    assert set(mails) == {notify.QUARANTINED, notify.DESTINATION_PROBLEM, notify.LOW_SPACE,
                          notify.GRACE, notify.STARTUP, notify.UNCLEAN_SHUTDOWN}
    quarantine = body(mails[notify.QUARANTINED])
    assert "alice/empty" in mails[notify.QUARANTINED]["Subject"]
    assert "contains no files" in quarantine and quarantined.final_path in quarantine
    assert "/mnt/storage is not mounted" in body(mails[notify.DESTINATION_PROBLEM])
    low = body(mails[notify.LOW_SPACE])
    assert f"Where:          {facility.destination}" in low
    assert "12 MB" in low and "500 MB" in low
    grace = body(mails[notify.GRACE])
    assert "alice:" in grace and "exp1" in grace and "1.2 kB" in grace and "purge" in grace
    startup = body(mails[notify.STARTUP])
    for expected in ("0.1.0", str(facility.incoming), str(facility.destination), "free of",
                     "Queue: 0 dataset(s)", "Grace area: 1 folder(s)", "xxh3_128"):
        assert expected in startup, expected
    assert "did not stop cleanly" in mails[notify.UNCLEAN_SHUTDOWN]["Subject"]


def test_the_startup_mail_shows_each_destination_and_a_share_as_last_measured(
        tmp_path, smtp_server, monkeypatch):
    from autotx_lib.transfer.destinations.free_space import record_free_space

    monkeypatch.setenv("AUTOTX_TEST_SMB_PASSWORD", "secret")
    server = smtp_server()
    config = with_email(Config(
        incoming=tmp_path / "incoming", managed=tmp_path / "managed",
        destinations=[{"name": "storage", "url": str(tmp_path / "storage")},
                      {"name": "backup", "url": "smb://autotx@nas.example.org/backup/lsm",
                       "password_env": "AUTOTX_TEST_SMB_PASSWORD", "required": False}]),
        server.port, admin_notification_delta_minutes=0)
    (tmp_path / "storage").mkdir()
    journal = Journal(config.journal_url)
    notifier = Notifier(config, journal)
    assert notifier.startup_report() is not None
    record_free_space(journal, "backup", 7_500_000_000)
    assert notifier.startup_report() is not None
    assert notifier.flush() == 2
    before, after = (body(m) for m in server.inbox.to("admin@example.org"))
    for startup in (before, after):
        assert f"storage      {tmp_path / 'storage'}: " in startup and "free of" in startup
        assert "backup       smb://autotx@nas.example.org/backup/lsm: " in startup
    assert "not measured yet" in before and "7.5 GB free (measured " in after


def test_two_destination_problems_within_the_delta_give_one_mail(facility, smtp_server):
    server = smtp_server()
    with_email(facility, server.port, admin_notification_delta_minutes=60,
               storage_notification_delta_minutes=720)
    journal = Journal(facility.journal_url)
    notifier = Notifier(facility, journal)
    assert notifier.destination_problem("not mounted") is not None
    assert notifier.destination_problem("not mounted") is None  # the agent's next retry
    assert notifier.low_space("/data", 1, 100) is not None  # another kind, its own limit
    assert notifier.low_space("/data", 1, 100) is None
    assert notifier.flush() == 2
    age_outbox(journal, 61)  # the admin period is over, the storage one is not
    assert notifier.destination_problem("still not mounted") is not None
    assert notifier.low_space("/data", 1, 100) is None
    assert notifier.flush() == 1
    assert len([m for _, m in server.inbox.messages
                if m["X-Autotx-Kind"] == notify.DESTINATION_PROBLEM]) == 2

    facility.email.admin_notification_delta_minutes = 0  # 0 = no limit
    notifier = Notifier(facility, journal)
    assert notifier.destination_problem("a") and notifier.destination_problem("b")


def test_a_quarantine_held_back_by_the_rate_limit_is_mailed_later_not_lost(facility,
                                                                          smtp_server):
    server = smtp_server()
    with_email(facility, server.port)
    make_dataset(facility.incoming, "alice", "empty1", {})
    run_agent_without_mail(facility)
    journal = Journal(facility.journal_url)
    notifier = Notifier(facility, journal)
    assert notifier.dataset_quarantined(journal.datasets_in([J.ERROR])[0]) is not None
    assert notifier.flush() == 1
    make_dataset(facility.incoming, "alice", "empty2", {})
    run_agent_without_mail(facility)
    second = [r for r in journal.datasets_in([J.ERROR]) if r.name == "empty2"][0]
    assert notifier.dataset_quarantined(second) is None  # within the hour
    assert any(e.kind == "mail-deferred" for e in journal.recent_events(20, second.id))
    assert notifier.flush() == 0
    age_outbox(journal, 61)
    assert notifier.flush() == 1  # the period is over: the held-back one goes out
    latest = server.inbox.messages[-1][1]
    assert "1 dataset(s) quarantined" in latest["Subject"] and "alice/empty2" in body(latest)
    assert "empty1" not in body(latest)
    age_outbox(journal, 61)
    assert notifier.flush() == 0  # and only once


# --- a server that is down, unreachable, or refuses -----------------------------------------


def test_server_down_keeps_the_mail_with_error_and_next_attempt_then_delivers(facility,
                                                                             smtp_server):
    port = free_port()  # nothing listens here
    journal, row = delivered_row(with_email(facility, port), {"a.tif": b"1"})  # transfer is fine
    assert row.state == J.DONE
    notifier = Notifier(facility, journal)
    mail_id = notifier.transfer_finished(row, ["a.tif"])

    assert notifier.flush() == 0  # no exception
    [mail] = [m for m in [journal.last_mail_of_kind(notify.TRANSFER_FINISHED)]]
    assert mail.id == mail_id and mail.sent_at is None and mail.attempts == 1
    assert "refused the connection" in mail.error and str(port) in mail.error
    assert mail.next_attempt_at > utcnow() + dt.timedelta(seconds=50)
    assert journal.pending_mail() == []  # not retried before it is due
    assert any(e.kind == "mail-failed" for e in journal.recent_events(10))
    make_due(journal)
    assert notifier.flush() == 0
    mail = journal.last_mail_of_kind(notify.TRANSFER_FINISHED)
    assert mail.attempts == 2 and mail.next_attempt_at > utcnow() + dt.timedelta(seconds=110)

    server = smtp_server(port)  # the server comes back
    make_due(journal)
    assert notifier.flush() == 1
    assert server.inbox.to("alice@example.org")
    mail = journal.last_mail_of_kind(notify.TRANSFER_FINISHED)
    assert mail.sent_at is not None and mail.error is None


def test_unreachable_smtp_host_is_reported_and_mail_kept(facility):
    with_email(facility, 25, smtp_host="smtp.invalid")
    journal = Journal(facility.journal_url)
    notifier = Notifier(facility, journal)
    notifier.destination_problem("gone")
    assert notifier.flush() == 0
    mail = journal.last_mail_of_kind(notify.DESTINATION_PROBLEM)
    assert mail.sent_at is None and "cannot resolve the SMTP host 'smtp.invalid'" in mail.error
    problem = check_smtp(facility)
    assert problem is not None and "smtp.invalid" in problem and "email.smtp_host" in problem
    with_email(facility, free_port())
    assert "refused the connection" in check_smtp(facility)


def test_check_smtp_accepts_a_working_server_and_ignores_a_missing_host(facility, smtp_server):
    server = smtp_server()
    assert check_smtp(with_email(facility, server.port)) is None
    facility.email = EmailSettings()
    assert check_smtp(facility) is None


def test_a_refused_recipient_keeps_that_mail_and_sends_the_others(facility, smtp_server):
    class Picky(Inbox):
        async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
            if address.startswith("nobody"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    port = free_port()
    inbox = Picky()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        journal = Journal(with_email(facility, port, admin="nobody@example.org",
                                     user_addresses={"alice": "alice@example.org"}).journal_url)
        notifier = Notifier(facility, journal)
        notifier.destination_problem("x")
        journal_row = journal.add_dataset(user="alice", name="d", stamp="s", state=J.DONE,
                                          incoming_path="i", processing_path="p",
                                          algorithm="md5", total_files=1, total_bytes=1)
        notifier.transfer_interrupted(journal.dataset(journal_row))
        assert notifier.flush() == 1
        refused = journal.last_mail_of_kind(notify.DESTINATION_PROBLEM)
        assert refused.sent_at is None and "550" in refused.error and refused.next_attempt_at
        assert [r for r, _ in inbox.messages] == [["alice@example.org"]]
    finally:
        controller.stop()


# --- authentication and TLS --------------------------------------------------------------


def authenticator(expected_password: str):
    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"autotx" and auth_data.password == expected_password.encode()
        return AuthResult(success=ok, handled=False)
    return check


@pytest.mark.parametrize("source", ["env", "file", "inline"])
def test_login_with_the_password_from_env_file_or_config(facility, smtp_server, tmp_path,
                                                         monkeypatch, source):
    server = smtp_server(authenticator=authenticator(SECRET), auth_require_tls=False,
                         auth_required=True)
    settings = {"env": {"password_env": "AUTOTX_TEST_SMTP_PASSWORD"},
                "file": {"password_file": tmp_path / "smtp-password"},
                "inline": {"password": SECRET}}[source]
    monkeypatch.setenv("AUTOTX_TEST_SMTP_PASSWORD", SECRET)
    (tmp_path / "smtp-password").write_text(SECRET + "\n")
    with_email(facility, server.port, user="autotx", **settings)
    assert check_smtp(facility) is None
    notifier = Notifier(facility, Journal(facility.journal_url))
    notifier.low_space("/data", 1, 2)
    assert notifier.flush() == 1 and server.inbox.to("admin@example.org")


@pytest.fixture
def log_records(monkeypatch):
    """Every record of the ``autotx`` loggers at DEBUG, whatever pytest's logging options."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("autotx")
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_wrong_or_missing_password_is_reported_without_the_password(facility, smtp_server,
                                                                    tmp_path, monkeypatch,
                                                                    log_records):
    server = smtp_server(authenticator=authenticator("the-right-one"), auth_require_tls=False,
                         auth_required=True)
    monkeypatch.setenv("AUTOTX_TEST_SMTP_PASSWORD", SECRET)
    with_email(facility, server.port, user="autotx", password_env="AUTOTX_TEST_SMTP_PASSWORD")
    journal = Journal(facility.journal_url)
    notifier = Notifier(facility, journal)
    notifier.low_space("/data", 1, 2)
    assert notifier.flush() == 0
    mail = journal.last_mail_of_kind(notify.LOW_SPACE)
    assert "refused the login of 'autotx'" in mail.error
    assert "refused the login" in check_smtp(facility)

    monkeypatch.delenv("AUTOTX_TEST_SMTP_PASSWORD")
    make_due(journal)
    assert notifier.flush() == 0
    mail = journal.last_mail_of_kind(notify.LOW_SPACE)
    assert "AUTOTX_TEST_SMTP_PASSWORD (email.password_env) is not set" in mail.error
    facility.email = facility.email.model_copy(update={
        "password_env": None, "password_file": tmp_path / "missing"})
    assert "cannot be read" in check_smtp(facility)

    texts = [e.message for e in journal.recent_events(100)]
    texts += [m.error or "" for m in [journal.last_mail_of_kind(notify.LOW_SPACE)]]
    texts += [record.getMessage() for record in log_records]
    assert log_records and not any(SECRET in text for text in texts)
    assert server.inbox.messages == []


def self_signed_certificate(folder: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 and its key (cryptography, trustme or the openssl tool)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if importlib.util.find_spec("trustme") is not None:
        import trustme

        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        authority.cert_pem.write_to_path(str(folder / "ca.pem"))
        return folder / "ca.pem", key  # trust the authority; the server serves cert + key
    if shutil.which("openssl") is None:
        return None
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    return (cert, key) if result.returncode == 0 else None


@pytest.fixture
def tls_files(tmp_path, monkeypatch):
    made = self_signed_certificate(tmp_path)
    if made is None:
        reason = ("no way to make a test certificate: neither trustme nor the openssl tool "
                  "is available (pip install trustme)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    trusted, key = made
    server_cert = tmp_path / "cert.pem"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))  # the client trusts only this one
    return context


def test_starttls_then_login(facility, smtp_server, tls_files):
    server = smtp_server(require_starttls=True, tls_context=tls_files,
                         authenticator=authenticator(SECRET), auth_required=True)
    with_email(facility, server.port, security="starttls", user="autotx", password=SECRET)
    assert check_smtp(facility) is None
    notifier = Notifier(facility, Journal(facility.journal_url))
    notifier.destination_problem("x")
    assert notifier.flush() == 1 and server.inbox.to("admin@example.org")


def test_plain_smtp_against_a_server_that_requires_starttls_keeps_the_mail(facility,
                                                                           smtp_server,
                                                                           tls_files):
    server = smtp_server(require_starttls=True, tls_context=tls_files)
    with_email(facility, server.port, security="none")
    journal = Journal(facility.journal_url)
    notifier = Notifier(facility, journal)
    notifier.destination_problem("x")
    assert notifier.flush() == 0
    mail = journal.last_mail_of_kind(notify.DESTINATION_PROBLEM)
    assert mail.sent_at is None and "530" in mail.error


def test_implicit_tls(facility, smtp_server, tls_files):
    server = smtp_server(ssl_context=tls_files)
    with_email(facility, server.port, security="ssl")
    assert check_smtp(facility) is None
    notifier = Notifier(facility, Journal(facility.journal_url))
    notifier.low_space("/data", 1, 2)
    assert notifier.flush() == 1 and server.inbox.to("admin@example.org")


# --- templates ---------------------------------------------------------------------------


def test_templates_dir_overrides_one_template_and_a_broken_one_falls_back(facility,
                                                                          smtp_server,
                                                                          tmp_path):
    server = smtp_server()
    templates = tmp_path / "mail-templates"
    templates.mkdir()
    (templates / "transfer_finished.txt").write_text(
        "Subject: Ihre Daten {{ dataset.name }} sind da\nZiel: {{ destination }}\n")
    (templates / "low_space.txt").write_text("Subject: {{ no_such_variable }}\n{% if %}\n")
    with_email(facility, server.port, templates_dir=templates, subject_prefix="[Lab] ")
    journal, row = delivered_row(facility, {"a.tif": b"1"})
    notifier = Notifier(facility, journal)
    notifier.transfer_finished(row, ["a.tif"])
    notifier.low_space("/data", 1, 2)
    notifier.low_space("/data", 1, 2)  # rate limited, and the warning is not repeated
    assert notifier.flush() == 2
    [user_mail] = server.inbox.to("alice@example.org")
    assert user_mail["Subject"] == "[Lab] Ihre Daten exp1 sind da"
    assert body(user_mail).strip() == f"Ziel: {row.dest_path}"
    [admin_mail] = server.inbox.to("admin@example.org")
    assert admin_mail["Subject"].startswith("[Lab] ") and "low disk space" in admin_mail["Subject"]
    warnings = [e for e in journal.recent_events(50) if e.kind == "mail-template"]
    assert len(warnings) == 1 and "low_space.txt" in warnings[0].message


# --- the agent itself sends them -----------------------------------------------------------


def test_agent_mails_user_and_admin_and_keeps_mail_while_the_server_is_down(facility,
                                                                           smtp_server):
    port = free_port()  # nothing listens yet
    with_email(facility, port)
    make_dataset(facility.incoming, "alice", "exp", {"img.tif": b"pixels"})
    make_dataset(facility.incoming, "alice", "empty", {})

    summary = Agent(facility).run(once=True)

    assert summary.delivered and summary.failed  # transfers do not wait for mail
    journal = Journal(facility.journal_url)
    finished = journal.last_mail_of_kind(notify.TRANSFER_FINISHED)
    assert finished is not None, "the agent queued no mail for the user"
    assert finished.sent_at is None and "refused the connection" in finished.error

    server = smtp_server(port)  # the server comes back; the next agent loop sends
    make_due(journal)
    Agent(facility).run(once=True)
    to_alice = server.inbox.to("alice@example.org")
    assert len(to_alice) == 1 and "img.tif" in body(to_alice[0])
    to_admin = [m["Subject"] for m in server.inbox.to("admin@example.org")]
    assert any("quarantined" in subject for subject in to_admin)
    assert any("started" in subject.lower() for subject in to_admin)


# --- addresses made from folder names, and messages that can never be sent ------------------


def kinds(server: Server) -> list[str]:
    return [m["X-Autotx-Kind"] for _, m in server.inbox.messages]


@pytest.mark.parametrize("user", ["evil@attacker.test,alice", "al\u2028ice", "jörg"])
def test_a_user_folder_that_gives_no_safe_address_gets_no_mail_and_the_admin_is_told_once(
        facility, smtp_server, user):
    server = smtp_server()
    with_email(facility, server.port)
    (facility.destination / user).mkdir()
    make_dataset(facility.incoming, user, "run1", {"a.tif": b"1"})
    make_dataset(facility.incoming, "alice", "run2", {"b.tif": b"2"})

    first = Agent(facility).run(once=True)  # must not raise at mail time
    make_dataset(facility.incoming, user, "run3", {"c.tif": b"3"})
    second = Agent(facility).run(once=True)

    assert len(first.delivered) == 2 and len(second.delivered) == 1  # transfers go on
    recipients = [r for rcpt, _ in server.inbox.messages for r in rcpt]
    assert not any("attacker" in r or "ice@" in r.replace("alice@", "") for r in recipients)
    assert len(server.inbox.to("alice@example.org")) == 1  # the other user's mail went out
    [told] = [m for m in server.inbox.to("admin@example.org")
              if m["X-Autotx-Kind"] == notify.BAD_ADDRESS]
    assert "no e-mail for user" in told["Subject"] and "\u2028" not in told["Subject"]
    assert "email.user_addresses" in body(told) and repr(user) in body(told)
    journal = Journal(facility.journal_url)
    warnings = [e for e in journal.recent_events(200) if e.kind == "mail-bad-address"]
    assert len(warnings) == 1 and repr(user) in warnings[0].message
    assert journal.pending_mail() == []


def test_a_mapped_address_for_such_a_user_is_used(facility, smtp_server):
    server = smtp_server()
    with_email(facility, server.port,
               user_addresses={"evil@attacker.test,alice": "Alice <alice@example.org>"})
    (facility.destination / "evil@attacker.test,alice").mkdir()
    make_dataset(facility.incoming, "evil@attacker.test,alice", "run1", {"a.tif": b"1"})
    Agent(facility).run(once=True)
    [(rcpt, message)] = [(r, m) for r, m in server.inbox.messages
                         if m["X-Autotx-Kind"] == notify.TRANSFER_FINISHED]
    assert rcpt == ["alice@example.org"] and message["To"] == "Alice <alice@example.org>"


def test_one_unsendable_message_is_given_up_and_never_blocks_the_others(facility,
                                                                        smtp_server):
    server = smtp_server()
    journal = Journal(with_email(facility, server.port).journal_url)
    bad = {  # rows an older version may have queued, or a broken template produced
        journal.queue_mail("x", "evil@attacker.test, alice@example.org", "s", "b"): "2 addresses",
        journal.queue_mail("x", "al\u2028ice@example.org", "s", "b"): "line-separator",
        journal.queue_mail("x", "bob@example.org", "two\nlines", "b"): "cannot be built",
    }
    good = journal.queue_mail("x", "carol@example.org", "hello", "body")
    notifier = Notifier(facility, journal)

    assert notifier.flush() == 1  # no exception, and carol's mail is not held back
    assert [r for r, _ in server.inbox.messages] == [["carol@example.org"]]
    with journal.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(outbox))}
    assert rows[good].sent_at is not None
    for mail_id, reason in bad.items():
        row = rows[mail_id]
        assert row.sent_at is None and "given up" in row.error and reason in row.error
        assert row.next_attempt_at > utcnow() + dt.timedelta(days=365 * 50)
    make_due(journal)  # even when due again by hand, nothing reaches the attacker
    notifier.flush()
    assert not any("attacker" in r for rcpt, _ in server.inbox.messages for r in rcpt)
    failures = [e.message for e in journal.recent_events(20) if e.kind == "mail-failed"]
    assert failures and all("\u2028" not in text for text in failures)


def test_a_mail_that_makes_the_server_hang_up_holds_back_only_itself(facility):
    class HangsUpOnBob(Inbox):
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            if envelope.rcpt_tos == ["bob@example.org"]:
                server.transport.close()
                return "451 gone"
            return await super().handle_DATA(server, session, envelope)

    port = free_port()
    inbox = HangsUpOnBob()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        journal = Journal(with_email(facility, port).journal_url)
        bob = journal.queue_mail("x", "bob@example.org", "s", "b")
        carol = journal.queue_mail("x", "carol@example.org", "s", "b")
        notifier = Notifier(facility, journal)
        for _ in range(3):  # bob's mail comes first every time it is due
            make_due(journal)
            notifier.flush()
        assert [r for r, _ in inbox.messages] == [["carol@example.org"]]
        with journal.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(outbox))}
        assert rows[carol].sent_at is not None
        assert rows[bob].sent_at is None and rows[bob].attempts == 3 and rows[bob].error
    finally:
        controller.stop()
