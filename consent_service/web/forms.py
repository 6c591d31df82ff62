"""What every page form shares: the text rule (domain.text) as a WTForms validator."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_wtf import FlaskForm
from wtforms import Field
from wtforms.validators import ValidationError

from consent_service.domain.text import clean_text, unsafe_character


class SafeText:
    """Refuse text with a control character or a bidirectional override, naming it; keep the rest
    in Unicode NFC (a line break is allowed in `multiline` text)."""

    def __init__(self, *, multiline: bool = False) -> None:
        self.multiline = multiline

    def __call__(self, form: FlaskForm, field: Field) -> None:
        if not isinstance(field.data, str):
            return
        bad = unsafe_character(field.data.replace("\r", "\n") if self.multiline else field.data,
                               multiline=self.multiline)
        if bad is not None:
            raise ValidationError(_("Remove the character %(character)s: it cannot be stored.",
                                    character=bad))
        field.data = clean_text(field.data, field=field.name, multiline=self.multiline)
