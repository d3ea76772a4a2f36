"""Account codes: a client or project code keyed by the caller, recorded in the call's CDR.

How a caller enters one (modelled on the hybrid PBXs' "account code entry"):

- before the call: lift, dial the feature code (``*49`` by default), the code, ``#``;
  confirmation beeps and dial tone again; then dial the number as usual;
- during a call: key the same ``*49 <code> #`` (the far end hears the DTMF, as on any PBX);
- forced (class of service ``account_code = "forced"``): an outside call dialled without a
  code is answered with the special dial tone's cousin, stutter-free *confirmation* beeps,
  and waits for ``<code> #`` before the line is seized.

A code is 1 to 12 digits. When ``[accounting] account_codes`` lists codes, only those are
accepted (a wrong one gets the special information tone); an empty list accepts any.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from firmware.config.schema import Config

FEATURE_NAME = "account_code"
_CODE = re.compile(r"[0-9]{1,12}")


def code_is_valid(config: Config, code: str) -> bool:
    """Whether `code` may be recorded: well formed and, when codes are listed, listed."""
    return config.accounting.accepts_account_code(code)


def required_for(config: Config, extension_number: str | None) -> str:
    """The caller's account code policy: "none", "optional" or "forced"."""
    extension = config.extension(extension_number) if extension_number else None
    cos = config.classes_of_service.get(extension.class_of_service) if extension else None
    return cos.account_code if cos is not None else "optional"


def account_for_did(config: Config, did: str | None) -> str | None:
    """The account code an incoming call to `did` (or on the line so named) is billed to."""
    return config.accounting.account_code_for_did(did or None)


@dataclass
class InCallEntry:
    """Watches the digits an extension keys during a call for ``<feature> <code> #``."""

    feature_code: str
    keyed: str = field(default="")

    def feed(self, digit: str) -> str | None:
        """Add one digit; return the code when a complete entry has just been keyed."""
        self.keyed = (self.keyed + digit)[-(len(self.feature_code) + 13) :]
        start = self.keyed.rfind(self.feature_code)
        if start < 0 or not self.keyed.endswith("#"):
            return None
        code = self.keyed[start + len(self.feature_code) : -1]
        self.keyed = ""
        return code if _CODE.fullmatch(code) else None
