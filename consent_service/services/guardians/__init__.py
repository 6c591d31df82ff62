"""Parents and guardians: consent requests for children, the guardian's answer, the family page.

The package: `choices` (what a guardian decides and recording it), `notices` (their mail),
`consent_request` (asking and the answer), `family` (the family page), `staff` (linking, tasks, ID
checks), `lifecycle` (reminders and expiry).

The rules. Ages are whole years on the library's day (America/Denver), computed on the day asked; a
29 February birthday falls on 1 March in common years.

- Who is asked. When a guardian is linked to an active child under 13, or to an active minor under
  17 whose card has no guardian permission in force (`minor_card` not allowed), a request is made
  and a notice emailed to the guardian: to the guardian patron's address, else the link's email
  address, in the guardian patron's language, else the child's. A guardian with no address cannot
  be asked, so no request is made. A guardian link has at most one pending request.
- What a guardian decides: the purposes the child is still young enough to need a guardian for, on
  the day (`domain.guardians.guardian_purposes`). Under 13: the child's online services, programs,
  card, email (one tick per email topic, offered only when the child has an email address), postal
  mail, photos and video, and, apart, each kind of sharing with vendors. From 13 to 16: the card.
- What an answer records: only what the guardian deliberately changed on a page that showed what
  is in force. Every page (the request page, each child on the family page) shows a box ticked
  exactly when a guardian's opt-in is in force for the child, and carries what it showed (the
  form's `shown` field). On saving, a box left as it was shown records nothing; ticking a box
  shown unticked records an opt-in; unticking a box shown ticked records an opt-out (a withdrawal).
  A change that is already in force when the answer arrives (another guardian made it meanwhile)
  records nothing. So an untouched box never revokes anything: a reminder, a second guardian or a
  re-sent request cannot wipe an earlier yes, and a page opened before another guardian's change
  cannot undo that change. A form without `shown` is compared with what is in force now.
- Vendor sharing for a child under 13 needs its own tick (CONSENT_GUARDIAN_VENDOR_METHOD
  `separate_tick`, the default) or, with `id_check`, staff checking the guardian's ID in person
  (`record_id_check`; a CLI command until staff pages exist). With `id_check` the pages do not
  offer it, but a guardian can still withdraw it on the family page.
- Every decision goes through record_decision: actor guardian, source guardian_page (staff_desk for
  an ID check), actor_ref the guardian link's public id, and evidence: method (`email_plus`, or
  `id_check`), the notice version shown, the typed name and the confirmation tick (on the guardian
  page), the guardian link and request ids, the link's id, the network and user agent.
- Answering again is a change. Either of two guardians may decide; the latest decision stands (the
  ledger's ordering) and both see the same state on their family pages.
- After a guardian decides, a confirmation goes to the same address listing the decisions, with a
  family link to change or withdraw them ("email plus"). A family link shows every child linked to
  the same guardian (the same guardian patron, or the same guardian email address), nobody else.
- Turning 13: the guardian's decisions stay in force until the teen makes their own (the ledger
  keeps them; from the 13th birthday the teen's own decisions count, and the latest stands). The
  guardian-only purposes (online services, programs) no longer apply. A guardian then decides only
  the card, and sees the teen's other decisions.
- Turning 17: `minor_card` no longer applies; a guardian decides nothing more, and the family page
  shows only the young person's first name.
- A request unanswered by its `expires_at` (CONSENT_GUARDIAN_RESPONSE_DAYS, default 14, after it was
  made) expires: the address it was sent to is erased, and a guardian link that is only an email
  address and never answered is deleted. Its guardian link no longer opens.
"""
