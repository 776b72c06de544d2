"""The reply catalogue: realistic SMTP replies per provider (isp-responses.md §2) and how PMTA logs them.

Each `Reply` knows its dsnStatus (enhanced code + PMTA's description), the dsnDiag text PMTA writes
(`smtp;` + the reply, multi-line replies joined with spaces), the bounceCat PMTA would assign, the
response class the exporter should derive (ground truth for the classifier) and whether PMTA's
smtp-pattern-list would put the queue into backoff. Templates take {ip} {rcpt} {domain} {sender}
{mx} {mxip} {id} {gid} (a Gmail-style transaction id); scenarios refer to replies by id.
"""

from __future__ import annotations

from dataclasses import dataclass

_DESCRIPTIONS = {
    "0.0": "undefined status", "1.0": "unknown address-related status", "1.1": "bad destination mailbox address",
    "1.2": "bad destination system: no such domain", "1.8": "bad sender's system address",
    "1.10": "recipient address has null MX", "2.0": "undefined mailbox status",
    "2.1": "mailbox disabled, not accepting messages", "2.2": "mailbox full",
    "3.0": "other or undefined mail system status", "3.1": "mail system full", "3.2": "system not accepting network "
    "messages", "3.4": "message too big for system", "3.5": "system incorrectly configured",
    "4.0": "other or undefined network or routing status", "4.1": "no answer from host", "4.2": "bad connection",
    "4.3": "directory server failure", "4.4": "unable to route", "4.6": "routing loop detected",
    "4.7": "delivery time expired", "5.0": "other or undefined protocol status", "5.1": "invalid command",
    "5.2": "syntax error", "6.0": "other or undefined media error", "7.0": "other or undefined security status",
    "7.1": "delivery not authorized, message refused",
}


def dsn_status(enh: str) -> str:
    """`4.2.2 (mailbox full)`; unknown details fall back to the subject's `.0` description."""
    if enh.startswith("2."):
        return f"{enh} (success)"
    _, subject, detail = enh.split(".")
    text = _DESCRIPTIONS.get(f"{subject}.{detail}") or _DESCRIPTIONS.get(f"{subject}.0", "undefined status")
    return f"{enh} ({text})"


@dataclass(frozen=True, slots=True)
class Reply:
    id: str
    code: int
    enh: str
    """Enhanced status; replies without one get `<digit>.0.0` as PMTA does."""
    diag: str
    """dsnDiag after `smtp;` (template). Empty for PMTA-internal outcomes (no remote reply); for PMTA's own
    connection and DNS failures, its own text (pmta-formats.md §4.1), written without `smtp;` (`internal`)."""
    bounce_cat: str
    klass: str
    backoff: bool = False
    internal: bool = False
    """PMTA's own verdict or failure (expiry, no such domain, a connection or DNS failure): no remote reply, so
    a `diag` is PMTA's text, written without `smtp;`."""

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def success(self) -> bool:
        return self.code < 300

    @property
    def status(self) -> str:
        return dsn_status(self.enh)

    def render_diag(self, ctx: dict[str, str]) -> str:
        if not self.diag:
            return ""
        text = self.diag.format_map(ctx)
        return text if self.internal else "smtp;" + text


_GSMTP = "{gid} - gsmtp"
_R = Reply
CATALOGUE: dict[str, Reply] = {r.id: r for r in (
    # --- Gmail (support.google.com/a/answer/3726730) -------------------------------------------
    _R("gmail.ok", 250, "2.0.0", "250 2.0.0 OK  1718190000 " + _GSMTP, "success", "delivered"),
    _R("gmail.rate_limited_ip", 421, "4.7.28",
       "421-4.7.28 [{ip}      15] Gmail has detected an unusual rate of unsolicited mail originating from your IP "
       "address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. "
       "421-4.7.28 For more information, go to 421 4.7.28 https://support.google.com/mail/?p=UnsolicitedRateLimitError "
       "to review our Bulk Email Senders Guidelines. " + _GSMTP, "", "throttled", backoff=True),
    _R("gmail.low_reputation", 421, "4.7.0",
       "421-4.7.0 [{ip}      15] This message is suspicious due to the very low reputation of the sending IP "
       "address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. "
       + _GSMTP, "", "reputation", backoff=True),
    _R("gmail.temp_system", 421, "4.3.0", "421 4.3.0 Temporary System Problem.  Try again later (10). " + _GSMTP,
       "", "transient_remote"),
    _R("gmail.recipient_rate", 450, "4.2.1",
       "450-4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a "
       "later time. If the user is able to receive mail at that time, your message will be delivered. " + _GSMTP,
       "", "recipient_rate"),
    _R("gmail.mailbox_full", 452, "4.2.2",
       "452-4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to 452 4.2.2 "
       "https://support.google.com/mail/?p=OverQuotaTemp " + _GSMTP, "quota-issues", "mailbox_full"),
    _R("gmail.user_unknown", 550, "5.1.1",
       "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the "
       "recipient's email address for typos or unnecessary spaces. For more information, go to 550 5.1.1 "
       "https://support.google.com/mail/?p=NoSuchUser " + _GSMTP, "bad-mailbox", "user_unknown"),
    _R("gmail.content", 550, "5.7.1",
       "550-5.7.1 [{ip}] Gmail has detected that this message is likely unsolicited mail. To reduce the amount of "
       "spam sent to Gmail, this message has been blocked. " + _GSMTP, "spam-related", "content"),
    _R("gmail.auth_unauthenticated", 550, "5.7.26",
       "550-5.7.26 Your email has been blocked because the sender is unauthenticated. Gmail requires all senders to "
       "authenticate with either SPF or DKIM. 550-5.7.26  Authentication results: 550-5.7.26  DKIM = did not pass "
       "550-5.7.26  SPF [{sender}] with ip: [{ip}] = did not pass " + _GSMTP, "policy-related", "auth_failure"),
    _R("gmail.dkim_not_pass", 421, "4.7.30",
       "421-4.7.30 Your email has been rate limited because DKIM authentication didn't pass for this message. "
       "Gmail requires all bulk email senders to authenticate with DKIM. 421 4.7.30 DKIM = did not pass "
       + _GSMTP, "", "auth_failure"),
    # --- Yahoo / AOL ---------------------------------------------------------------------------
    _R("yahoo.ok", 250, "2.0.0", "250 ok dirdel", "success", "delivered"),
    _R("yahoo.tss04", 421, "4.7.0",
       "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or user complaints - "
       "4.16.55.1; see https://postmaster.yahooinc.com/error-codes", "", "throttled", backoff=True),
    _R("yahoo.busy", 451, "4.0.0",
       "451 Resources temporarily unavailable. Please try again later [#4.16.1].", "", "transient_remote"),
    _R("yahoo.max_per_conn", 421, "4.0.0",
       "421 Max message per connection reached, closing transmission channel", "", "throttled"),
    _R("yahoo.user_unknown", 554, "5.0.0", "554 delivery error: dd This user doesn't have a {domain} account "
       "({rcpt}) [0] - mta7.am0.yahoodns.net", "bad-mailbox", "user_unknown"),
    _R("yahoo.mailbox_full", 452, "4.2.2", "452 4.2.2 Mailbox over quota", "quota-issues", "mailbox_full"),
    _R("yahoo.content", 554, "5.0.0", "554 Message not allowed - [PH01] Email not accepted for policy reasons. "
       "Please visit https://postmaster.yahooinc.com/error-codes", "content-related", "content"),
    _R("yahoo.dmarc", 554, "5.7.9", "554 5.7.9 Message not accepted for policy reasons.  See "
       "https://postmaster.yahooinc.com/error-codes", "policy-related", "auth_failure"),
    _R("yahoo.blocklisted", 553, "5.7.1", "553 5.7.1 [BL23] Connections will not be accepted from {ip}, because "
       "the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", "spam-related",
       "blocklisted"),
    # --- Microsoft consumer (and M365 tenants) -------------------------------------------------
    _R("microsoft.ok", 250, "2.6.0", "250 2.6.0 <{id}@{sender}> [InternalId=1718190000, "
       "Hostname=BN8NAM12HT123.eop-nam12.prod.protection.outlook.com] Queued mail for delivery", "success",
       "delivered"),
    _R("microsoft.rate_limited_s775", 451, "4.7.650", "451 4.7.650 The mail server [{ip}] has been temporarily "
       "rate limited due to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)",
       "", "throttled", backoff=True),
    _R("microsoft.blocklist_s3150", 550, "5.7.1", "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. "
       "Please contact your Internet service provider since part of their network is on our block list (S3150). "
       "You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. "
       "[BN8NAM12FT061.eop-nam12.prod.protection.outlook.com 2024-06-12T10:00:00.000Z 08DC8A1B2C3D4E5F]",
       "policy-related", "blocklisted"),
    _R("microsoft.auth_5515", 550, "5.7.515", "550 5.7.515 Access denied, sending domain [{sender}] does not meet "
       "the required authentication level. The sender's domain in the 5322.From address doesn't meet the "
       "authentication requirements defined for the sender. To learn more, see https://aka.ms/5.7.515",
       "policy-related", "auth_failure"),
    _R("microsoft.busy", 451, "4.7.500", "451 4.7.500 Server busy. Please try again later from [{ip}]. (S77719) "
       "[BN8NAM12FT061.eop-nam12.prod.protection.outlook.com]", "", "throttled"),
    _R("microsoft.user_unknown", 550, "5.5.0", "550 5.5.0 Requested action not taken: mailbox unavailable "
       "(S2017) [BN8NAM12FT061.eop-nam12.prod.protection.outlook.com]", "bad-mailbox", "user_unknown"),
    _R("microsoft.mailbox_full", 452, "4.2.2", "452 4.2.2 The recipient's mailbox is full.", "quota-issues",
       "mailbox_full"),
    _R("microsoft.content", 550, "5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering. "
       "[BN8NAM12FT061.eop-nam12.prod.protection.outlook.com]", "spam-related", "content"),
    _R("microsoft.spamhaus", 550, "5.7.1", "550 5.7.1 Service unavailable, Client host [{ip}] blocked using "
       "Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/{ip} (AS3130). "
       "[BN8NAM12FT061.eop-nam12.prod.protection.outlook.com]", "spam-related", "blocklisted"),
    # --- Apple iCloud --------------------------------------------------------------------------
    _R("apple.ok", 250, "2.0.0", "250 2.0.0 Ok: queued as 01000190ABCD1234-{id}", "success", "delivered"),
    _R("apple.busy", 451, "4.7.1", "451 4.7.1 Service unavailable - try again later", "", "transient_remote"),
    _R("apple.excessive_volume", 421, "4.7.1", "421 4.7.1 Messages to {rcpt} deferred due to excessive volume. "
       "Try again later - https://support.apple.com/en-us/HT204137", "", "recipient_rate"),
    _R("apple.user_unknown", 550, "5.1.1", "550 5.1.1 <{rcpt}>: user does not exist", "bad-mailbox",
       "user_unknown"),
    _R("apple.mailbox_full", 552, "5.2.2", "552 5.2.2 <{rcpt}>: user is over quota", "quota-issues",
       "mailbox_full"),
    # [CS01]: isp-responses.md §2.4 says policy/reputation, §2.10's content row lists Apple CS01; we follow §2.10
    # (see exporter/classify/replies.yaml, rule apple-cs01). PMTA's own bounceCat still reads "local policy".
    _R("apple.content", 550, "5.7.1", "550 5.7.1 [CS01] Message rejected due to local policy. Please visit "
       "https://support.apple.com/en-us/HT204137", "policy-related", "content"),
    # --- Comcast -------------------------------------------------------------------------------
    _R("comcast.ok", 250, "2.0.0", "250 2.0.0 {id} mail accepted for delivery", "success", "delivered"),
    _R("comcast.throttled", 421, "4.1.0", "421 4.1.0 {ip} Throttled - try again later. Please see "
       "https://postmaster.comcast.net/smtp-error-codes.php#RL000003", "", "throttled", backoff=True),
    _R("comcast.user_unknown", 550, "5.1.1", "550 5.1.1 <{rcpt}> Not our Customer", "bad-mailbox", "user_unknown"),
    _R("comcast.blocklisted", 554, "5.7.1", "554 5.7.1 resimta-h1p-028482.sys.comcast.net comcast {ip} Comcast "
       "block for spam.  Please see http://postmaster.comcast.net/smtp-error-codes.php#BL000001", "spam-related",
       "blocklisted"),
    # --- GMX / WEB.DE (no enhanced codes) -------------------------------------------------------
    _R("gmx.rate", 421, "4.0.0", "421-gmx.net (mxgmx117) Nemesis ESMTP Service not available 421-Reject due to "
       "policy restrictions. 421 Too many messages have been received in a short period of time, please reduce the "
       "sending rate", "", "throttled", backoff=True),
    _R("gmx.user_unknown", 550, "5.0.0", "550 Requested action not taken: mailbox unavailable", "bad-mailbox",
       "user_unknown"),
    _R("gmx.blocklisted", 554, "5.0.0", "554-gmx.net (mxgmx104) Nemesis ESMTP Service not available 554-No SMTP "
       "service 554-IP address is block listed. 554 For explanation visit "
       "https://postmaster.gmx.net/en/case?c=r0201&i=ip&v={ip}", "spam-related", "blocklisted"),
    # --- anything else (Postfix/Exim-style hosts) -----------------------------------------------
    _R("generic.ok", 250, "2.0.0", "250 2.0.0 Ok: queued as {id}", "success", "delivered"),
    _R("generic.busy", 421, "4.3.0", "421 4.3.0 {mx} Service not available, closing transmission channel", "",
       "transient_remote"),
    # Greylisting lifts by itself on retry: transient_remote (isp-responses.md §2.10; replies.yaml, greylisting)
    _R("generic.greylist", 450, "4.7.1", "450 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, see "
       "http://postgrey.schweikert.ch/help/{domain}.html", "", "transient_remote"),
    _R("generic.mailbox_full", 452, "4.2.2", "452 4.2.2 <{rcpt}>: Recipient address rejected: Mailbox full",
       "quota-issues", "mailbox_full"),
    _R("generic.user_unknown", 550, "5.1.1", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in "
       "virtual mailbox table", "bad-mailbox", "user_unknown"),
    _R("generic.content", 554, "5.7.1", "554 5.7.1 Message rejected, spam score too high", "spam-related",
       "content"),
    # --- PMTA's own outcomes (no remote reply) ---------------------------------------------------
    _R("pmta.no_such_domain", 550, "5.1.2", "", "bad-domain", "bad_domain", internal=True),
    _R("pmta.expired", 450, "4.4.7", "", "message-expired", "expired", internal=True),
    _R("pmta.timeout", 450, "4.4.1", "", "", "network", internal=True),
    # PMTA's own connection and DNS failures, its "last error" texts (pmta-formats.md §4.1, pmta-http-api.md §10)
    _R("pmta.etimedout", 450, "4.4.1", "ETIMEDOUT in connection to {domain} ({mxip})", "", "network",
       internal=True),
    _R("pmta.econnrefused", 450, "4.4.1", "ECONNREFUSED connecting to {domain} ({mxip})", "", "network",
       internal=True),
    _R("pmta.ediscon", 450, "4.4.2", "EDISCON in connection to {domain} ({mxip})", "", "network", internal=True),
    _R("pmta.dns_failed", 450, "4.4.3", "StatusDnsQueryFailed resolving {domain}", "", "network", internal=True),
)}

REMOTE_BOUNCE = Reply("rb.user_unknown", 550, "5.1.1", "550 5.1.1 <{rcpt}>: Recipient address rejected: User "
                      "unknown in local recipient table", "bad-mailbox", "user_unknown")


def get_reply(reply_id: str) -> Reply:
    try:
        return CATALOGUE[reply_id]
    except KeyError:
        raise KeyError(f"unknown reply {reply_id!r}; known: {', '.join(sorted(CATALOGUE))}") from None
