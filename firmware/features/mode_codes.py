"""Mode feature codes: ``*61`` forces night, ``*62`` day, ``*60`` back to the schedule.

Dialled from a permitted extension (`modes.override_extensions`, else the operator): the
caller hears confirmation beeps and the mode changes at once (logged, persisted, with the
expiry `modes.phone_override` gives). Anyone else hears the special information tone.
"""

from __future__ import annotations

import logging

from firmware.calls.cdr import Disposition
from firmware.features import feature_codes
from firmware.features.context import NodeContext
from firmware.modes.policy import FEATURE_PREFIX, mode_feature

log = logging.getLogger("firmware.features")


async def change_mode(ctx: NodeContext, feature: str) -> None:
    request = mode_feature(feature)
    modes = ctx.calls.modes
    if request is None or modes is None:
        await ctx.end("special_information", Disposition.INVALID, f"feature_not_available:{feature}")
        return
    try:
        decision = await modes.async_phone_override(ctx.caller.number, request.mode)
    except PermissionError:
        await ctx.end("special_information", Disposition.REJECTED, "mode_override_not_allowed")
        return
    except ValueError as error:
        log.warning("event=mode_override_failed call=%d feature=%s error=%r", ctx.session.id, feature, str(error))
        await ctx.end("special_information", Disposition.INVALID, "mode_unknown")
        return
    log.info("event=mode_feature call=%d extension=%s mode=%s", ctx.session.id, ctx.caller.number, decision.name)
    await ctx.end("confirmation", Disposition.ANSWERED, f"mode:{request.mode or 'auto'}")


feature_codes.register(FEATURE_PREFIX, change_mode)
