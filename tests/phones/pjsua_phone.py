"""A SIP phone made of pjsua2 (pjproject), run as its own process and driven over stdio.

Why a process: pjsua2 aborts the whole process on misuse asserts and its callbacks need
the GIL; kept apart, a crash fails one test cleanly and never touches the appliance's
event loop. Commands are JSON lines on stdin, events JSON lines on stdout; pjsua's own log
goes to the file given by --log. Everything runs on this process's main thread
(threadCnt = 0, mainThreadOnly): the loop polls libHandleEvents(10) and the command queue.
The process ends by itself after --lifetime seconds whatever the test does.

Commands: {"cmd": "call", "uri"}, "answer", "hangup", "tone" {"freq"} (0 stops),
"record" {"path"} / "record_stop", "hold", "unhold", "xfer" {"uri"}, "xfer_replaces" (the
earlier call is transferred to the current call's party), "unregister", "quit".
Events: ready, reg_state, incoming, call_state, media, xfer_status, recorded, error.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any

import pjsua2 as pj


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Phone:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ep = pj.Endpoint()
        self.account: Account | None = None
        self.call: PhoneCall | None = None
        self.old_calls: list[PhoneCall] = []  # pjsua2 needs the Python objects alive
        self.tone: pj.ToneGenerator | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.record_path = ""
        self.closing_wav: tuple[str, float] | None = None
        self.audio: pj.AudioMedia | None = None

    def start(self) -> None:
        args = self.args
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = "pjsua2-test-phone"
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.level = 5
        cfg.logConfig.filename = args.log
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        self.ep.libInit(cfg)
        transport = pj.TransportConfig()
        transport.port = 0
        transport.boundAddress = "127.0.0.1"
        transport.publicAddress = "127.0.0.1"
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        acc = pj.AccountConfig()
        acc.idUri = f"sip:{args.user}@{args.registrar}"
        acc.regConfig.registrarUri = f"sip:{args.registrar}"
        acc.regConfig.registerOnAdd = True
        acc.regConfig.timeoutSec = 300
        acc.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
        acc.natConfig.contactRewriteUse = 0
        acc.natConfig.viaRewriteUse = 0
        acc.natConfig.sdpNatRewriteUse = 0
        acc.mediaConfig.transportConfig.port = args.rtp_port
        acc.mediaConfig.transportConfig.portRange = 100
        acc.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        acc.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
        self.account = Account(self)
        self.account.create(acc)
        emit("ready")

    # ----- commands ----------------------------------------------------------------------

    def handle(self, command: dict[str, Any]) -> bool:
        """Run one command; False ends the process."""
        name = command.get("cmd")
        try:
            if name == "quit":
                return False
            if name == "call":
                call = PhoneCall(self, self.account)
                prm = pj.CallOpParam(True)
                call.makeCall(command["uri"], prm)
                self._set_call(call)
            elif name == "answer":
                prm = pj.CallOpParam()
                prm.statusCode = command.get("code", 200)
                self._current().answer(prm)
            elif name == "hangup":
                prm = pj.CallOpParam()
                prm.statusCode = command.get("code", 603)
                self._current().hangup(prm)
            elif name == "tone":
                self._tone(float(command.get("freq", 0)))
            elif name == "record":
                self._record(command["path"])
            elif name == "record_stop":
                self._record_stop()
            elif name == "hold":
                self._current().setHold(pj.CallOpParam(True))
            elif name == "unhold":
                prm = pj.CallOpParam(True)
                prm.opt.flag = pj.PJSUA_CALL_UNHOLD
                self._current().reinvite(prm)
            elif name == "xfer":
                self._current().xfer(command["uri"], pj.CallOpParam(True))
            elif name == "xfer_replaces":  # attended: the earlier (held) call joins the current one's party
                if not self.old_calls:
                    raise RuntimeError("no earlier call to transfer")
                self.old_calls[-1].xferReplaces(self._current(), pj.CallOpParam(True))
            elif name == "unregister":
                assert self.account is not None
                self.account.setRegistration(False)
            else:
                emit("error", cmd=name, error="unknown command")
        except pj.Error as error:
            emit("error", cmd=name, error=error.info())
        except Exception as error:  # report, never die silently
            emit("error", cmd=name, error=repr(error))
        return True

    def _current(self) -> PhoneCall:
        if self.call is None:
            raise RuntimeError("no call")
        return self.call

    def _set_call(self, call: PhoneCall) -> None:
        if self.call is not None:
            self.old_calls.append(self.call)
        self.call = call

    def _tone(self, freq: float) -> None:
        if self.tone is not None:
            self.tone.stop()
            if self.audio is not None:
                self.tone.stopTransmit(self.audio)
            self.tone = None
        if not freq:
            return
        if self.audio is None:
            raise RuntimeError("no active audio")
        tone = pj.ToneGenerator()
        tone.createToneGenerator(8000, 1)
        desc = pj.ToneDesc()
        desc.freq1 = int(freq)
        desc.freq2 = 0
        desc.on_msec = 1000
        desc.off_msec = 0
        desc.volume = 0
        tones = pj.ToneDescVector()
        tones.append(desc)
        tone.play(tones, True)
        tone.startTransmit(self.audio)
        self.tone = tone

    def _record(self, path: str) -> None:
        if self.audio is None:
            raise RuntimeError("no active audio")
        self._record_stop(report=False)
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(path)
        self.audio.startTransmit(recorder)
        self.recorder, self.record_path = recorder, path

    def _record_stop(self, report: bool = True) -> None:
        if self.recorder is None:
            return
        if self.audio is not None:
            self.audio.stopTransmit(self.recorder)
        # The destructor removes the port from the conference bridge; since pjproject 2.14
        # the bridge's clock thread does that (and closes the file, writing the WAV sizes)
        # a tick later, so "recorded" is reported by poll() once the header is complete.
        self.recorder = None
        if report:
            self.closing_wav = (self.record_path, time.monotonic() + 3.0)

    def poll(self) -> None:
        """Report a finished recording once its WAV header carries the data size."""
        if self.closing_wav is None:
            return
        path, deadline = self.closing_wav
        with open(path, "rb") as wav:
            riff_size = int.from_bytes(wav.read(8)[4:], "little")
        if riff_size or time.monotonic() > deadline:
            self.closing_wav = None
            emit("recorded", path=path, complete=bool(riff_size))

    def media_gone(self) -> None:
        self._record_stop()
        if self.tone is not None:
            self.tone.stop()
            self.tone = None
        self.audio = None


class Account(pj.Account):
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        info = self.getInfo()
        emit("reg_state", code=prm.code, active=info.regIsActive, expires=info.regExpiresSec)

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = PhoneCall(self.phone, self, prm.callId)
        info = call.getInfo()
        self.phone._set_call(call)
        emit("incoming", remote=info.remoteUri, local=info.localUri)
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)


class PhoneCall(pj.Call):
    def __init__(self, phone: Phone, account: Account | None, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.phone = phone

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        emit("call_state", state=info.stateText, code=info.lastStatusCode, reason=info.lastReason)
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED and self.phone.call is self:
            self.phone.media_gone()

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = {
                pj.PJSUA_CALL_MEDIA_NONE: "none",
                pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
                pj.PJSUA_CALL_MEDIA_ERROR: "error",
            }.get(media.status, str(media.status))
            if media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self.phone.audio = self.getAudioMedia(media.index)
            emit("media", status=status)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        emit("xfer_status", code=prm.statusCode, reason=prm.reason, final=prm.finalNotify)
        if prm.finalNotify and 200 <= prm.statusCode < 300:
            # What pjsua's own application (and most desk phones) do: the transfer
            # succeeded, so this call has served its purpose.
            prm.cont = False
            bye = pj.CallOpParam()
            bye.statusCode = 410
            try:
                self.hangup(bye)
            except pj.Error as error:  # the far end may have sent BYE first
                emit("error_ignored", cmd="hangup_after_xfer", error=error.info())


def read_commands(commands: queue.Queue[dict[str, Any] | None]) -> None:
    """stdin reader (a plain thread: it never calls pjsua)."""
    for line in sys.stdin:
        line = line.strip()
        if line:
            try:
                commands.put(json.loads(line))
            except json.JSONDecodeError:
                emit("error", error=f"bad command line {line!r}")
    commands.put(None)  # the test closed our stdin: end


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registrar", required=True, help="host:port of the appliance")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--rtp-port", type=int, default=31400)
    parser.add_argument("--log", default="/dev/null")
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    phone = Phone(args)
    commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    phone.start()
    deadline = time.monotonic() + args.lifetime
    running = True
    while running and time.monotonic() < deadline:
        phone.ep.libHandleEvents(10)
        phone.poll()
        while running:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                break
            running = command is not None and phone.handle(command)
    phone.media_gone()
    phone.ep.hangupAllCalls()
    for _ in range(20):  # let the BYE and un-REGISTER go out
        phone.ep.libHandleEvents(10)
    phone.call = None
    phone.old_calls.clear()
    phone.account = None
    phone.ep.libDestroy()
    emit("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
