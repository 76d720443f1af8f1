#!/usr/bin/python3
"""A small ONVIF device simulator, used only by tests/onvif.rs.

Simulated (no real ONVIF camera exists here):
- WS-Discovery: answers a Probe for dn:NetworkVideoTransmitter (or any Probe
  without Types) with a ProbeMatches, unicast to the sender, on a UDP port
  bound to --discovery-host (127.0.0.1 by default; with --multicast it also
  joins 239.255.255.250 on loopback).
- SOAP 1.2 over HTTP on one port for the Device (/onvif/device_service), Media
  (/onvif/media_service), PTZ (/onvif/ptz_service) and Events
  (/onvif/event_service) services. Answers are
  documents shaped after the ONVIF WSDLs (ver10 device/media, ver20 PTZ) and
  what common cameras send (two profiles, main 1920x1080 and sub 640x360, the
  main one with a PTZ configuration).
- Events (ONVIF Core 9.1, WS-BaseNotification): CreatePullPointSubscription
  makes a subscription at /onvif/subscription/N that terminates after its
  InitialTerminationTime (at most --max-lifetime, as cameras cap it) unless
  renewed (Renew), and sends the current motion
  state as "Initialized" notifications first, as cameras do; PullMessages
  waits up to its Timeout for notifications (a long poll) and answers at most
  MessageLimit; Unsubscribe ends it. A pull on an unknown or terminated
  subscription is a fault. Motion is raised and cleared by the test knob
  POST /sim/motion?on=1|0, which queues two "Changed" notifications per
  subscription: tns1:RuleEngine/CellMotionDetector/Motion (IsMotion) and
  tns1:VideoSource/MotionAlarm (State), as cameras that send both do.
- WS-Security UsernameToken: every call but GetSystemDateAndTime needs a
  PasswordDigest equal to Base64(SHA1(nonce + created + password)); a wrong or
  missing token answers HTTP 400 with a SOAP fault env:Sender/ter:NotAuthorized
  (as the ONVIF Core spec, section 5.12, says). Created must be within 5 minutes of the
  camera's clock ("stale" otherwise), as real cameras check; --clock-offset S sets the
  camera's clock S seconds off the host's, and GetSystemDateAndTime tells it (UTCDateTime).
Real: the RTSP URIs it returns are the ones given on the command line (the
tests' GStreamer camera), so a stream added from a profile really records.

Every SOAP request is recorded; GET /sim/requests answers them as JSON
[{"service", "op", "body", "auth", "to"}], body being the request's SOAP Body
XML and to its WS-Addressing To header ("" if none).
Prints one JSON line {"http": PORT, "discovery": PORT} once listening.
"""

import argparse
import base64
import datetime
import re
import time
import hashlib
import json
import socket
import struct
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "wsa": "http://www.w3.org/2005/08/addressing",
}
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"

ENV_OPEN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
    'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" '
    'xmlns:ter="http://www.onvif.org/ver10/error" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" '
    'xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:wsa5="http://www.w3.org/2005/08/addressing" '
    'xmlns:tns1="http://www.onvif.org/ver10/topics"><SOAP-ENV:Body>'
)
ENV_CLOSE = "</SOAP-ENV:Body></SOAP-ENV:Envelope>"


def local(tag):
    return tag.rsplit("}", 1)[-1]


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class Device:
    def __init__(self, args):
        self.args = args
        self.requests = []
        self.lock = threading.Lock()
        self.presets = [("1", "Home")]
        self.uuid = "urn:uuid:" + str(uuid.uuid4())
        # Events: subscription id -> {"expires": monotonic s, "queue": [notification XML]}.
        self.motion = False
        self.subs = {}
        self.next_sub = 1
        self.changed = threading.Condition(self.lock)

    def base(self):
        return f"http://{self.args.host}:{self.http_port}"

    # ---- WS-Security ----
    def auth(self, envelope):
        tok = envelope.find(".//wsse:UsernameToken", NS)
        if tok is None:
            return "missing"
        user = tok.findtext("wsse:Username", "", NS)
        pw = tok.find("wsse:Password", NS)
        nonce = tok.findtext("wsse:Nonce", "", NS)
        created = tok.findtext("wsu:Created", "", NS)
        if pw is None or pw.get("Type") != DIGEST:
            return "not-digest"
        try:
            raw = base64.b64decode(nonce)
        except Exception:
            return "bad-nonce"
        want = base64.b64encode(hashlib.sha1(raw + created.encode() + self.args.password.encode()).digest()).decode()
        if user != self.args.user or (pw.text or "").strip() != want:
            return "wrong"
        try:
            when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return "bad-created"
        if abs(when - self.now()) > 300:
            return "stale"
        return "ok"

    def now(self):
        """The camera's clock: the host's, off by --clock-offset."""
        return time.time() + self.args.clock_offset

    # ---- answers ----
    def answer(self, service, op, body, sub_id=None):
        a = self.args
        if service == "device" and op == "GetSystemDateAndTime":
            return (
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
                "<tt:DaylightSavings>false</tt:DaylightSavings>" + utc_date_time(self.now())
                + "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
            )
        if service == "device" and op == "GetDeviceInformation":
            return (
                "<tds:GetDeviceInformationResponse><tds:Manufacturer>SimCam</tds:Manufacturer>"
                "<tds:Model>SC-PTZ-2</tds:Model><tds:FirmwareVersion>V5.7.3 build 230101</tds:FirmwareVersion>"
                "<tds:SerialNumber>SC2-000123</tds:SerialNumber><tds:HardwareId>SC2-HW</tds:HardwareId>"
                "</tds:GetDeviceInformationResponse>"
            )
        if service == "device" and op == "GetCapabilities":
            b = self.base()
            return (
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{b}/onvif/device_service</tt:XAddr></tt:Device>"
                + self.events_capability(b)
                + f"<tt:Media><tt:XAddr>{b}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
                "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
                "</tt:StreamingCapabilities></tt:Media>"
                f"<tt:PTZ><tt:XAddr>{b}/onvif/ptz_service</tt:XAddr></tt:PTZ>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        if service == "media" and op == "GetProfiles":
            return "<trt:GetProfilesResponse>" + self.profile("Profile_1", "mainStream", 1920, 1080, True) + \
                self.profile("Profile_2", "subStream", 640, 360, False) + "</trt:GetProfilesResponse>"
        if service == "media" and op in ("GetStreamUri", "GetSnapshotUri"):
            token = body.findtext(".//{*}ProfileToken", "").strip()
            if token not in ("Profile_1", "Profile_2"):
                return fault("ter:InvalidArgVal", "ter:NoProfile", "The requested profile token does not exist")
            if op == "GetStreamUri":
                uri = a.main_uri if token == "Profile_1" else a.sub_uri
            else:
                uri = f"{self.base()}/onvif/snapshot.jpg?profile={token}"
            return (
                f"<trt:{op}Response><trt:MediaUri><tt:Uri>{esc(uri)}</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
                f"<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:{op}Response>"
            )
        if service == "events" and op == "CreatePullPointSubscription" and not a.no_events:
            return self.subscribe(body)
        if service == "subscription":
            return self.subscription(sub_id, op, body)
        if service == "ptz":
            token = body.findtext(".//{*}ProfileToken", "").strip()
            if token != "Profile_1":
                return fault("ter:InvalidArgVal", "ter:NoProfile", "The profile has no PTZ configuration")
            if op in ("ContinuousMove", "Stop"):
                return f"<tptz:{op}Response/>"
            if op == "GetPresets":
                items = "".join(
                    f'<tptz:Preset token="{t}"><tt:Name>{esc(n)}</tt:Name></tptz:Preset>' for t, n in self.presets
                )
                return f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>"
            if op == "GotoPreset":
                want = body.findtext(".//{*}PresetToken", "").strip()
                if not any(t == want for t, _ in self.presets):
                    return fault("ter:InvalidArgVal", "ter:NoToken", "The requested preset token does not exist")
                return "<tptz:GotoPresetResponse/>"
            if op == "SetPreset":
                name = body.findtext(".//{*}PresetName", "").strip()
                with self.lock:
                    token = str(len(self.presets) + 1)
                    self.presets.append((token, name))
                return f"<tptz:SetPresetResponse><tptz:PresetToken>{token}</tptz:PresetToken></tptz:SetPresetResponse>"
        return fault("ter:ActionNotSupported", "ter:ActionNotSupported", f"{op} is not supported by the {service} service")

    # ---- events ----
    def events_capability(self, b):
        if self.args.no_events:
            return ""
        return (
            f"<tt:Events><tt:XAddr>{b}/onvif/event_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>true</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport>"
            "</tt:Events>"
        )

    def notifications(self, operation):
        """The motion state as the two topics' notifications."""
        value = "true" if self.motion else "false"
        now = utc(time.time())
        out = []
        for topic, source, item in (
            ("tns1:RuleEngine/CellMotionDetector/Motion",
             '<tt:SimpleItem Name="VideoSourceConfigurationToken" Value="VideoSourceToken"/>'
             '<tt:SimpleItem Name="VideoAnalyticsConfigurationToken" Value="VideoAnalyticsToken"/>'
             '<tt:SimpleItem Name="Rule" Value="MyMotionDetectorRule"/>', "IsMotion"),
            ("tns1:VideoSource/MotionAlarm", '<tt:SimpleItem Name="Source" Value="VideoSource_1"/>', "State"),
        ):
            out.append(
                "<wsnt:NotificationMessage>"
                f'<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{topic}</wsnt:Topic>'
                f'<wsnt:Message><tt:Message UtcTime="{now}" PropertyOperation="{operation}">'
                f"<tt:Source>{source}</tt:Source><tt:Key/>"
                f'<tt:Data><tt:SimpleItem Name="{item}" Value="{value}"/></tt:Data>'
                "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"
            )
        return out

    def set_motion(self, on):
        with self.changed:
            if self.motion == on:
                return
            self.motion = on
            for sub in self.subs.values():
                sub["queue"].extend(self.notifications("Changed"))
            self.changed.notify_all()

    def times(self, sub):
        now = time.time()
        return (f"<wsnt:CurrentTime>{utc(now)}</wsnt:CurrentTime>"
                f"<wsnt:TerminationTime>{utc(now + sub['expires'] - time.monotonic())}</wsnt:TerminationTime>")

    def subscribe(self, body):
        secs = min(seconds(body.findtext(".//{*}InitialTerminationTime", ""), 60), self.args.max_lifetime)
        with self.lock:
            n = self.next_sub
            self.next_sub += 1
            sub = {"expires": time.monotonic() + secs, "queue": self.notifications("Initialized")}
            self.subs[n] = sub
            times = self.times(sub)
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa5:Address>{self.base()}/onvif/subscription/{n}</wsa5:Address></tev:SubscriptionReference>"
            f"{times}</tev:CreatePullPointSubscriptionResponse>"
        )

    def subscription(self, n, op, body):
        with self.changed:
            sub = self.subs.get(n)
            if sub is not None and sub["expires"] < time.monotonic():
                del self.subs[n]
                sub = None
            if sub is None:
                return fault("ter:InvalidArgVal", "wsrf-rw:ResourceUnknownFault", f"no subscription {n} (unknown or terminated)")
            if op == "PullMessages":
                wait = min(seconds(body.findtext(".//{*}Timeout", ""), 10), 60)
                limit = int(body.findtext(".//{*}MessageLimit", "") or 100)
                end = time.monotonic() + wait
                while not sub["queue"] and time.monotonic() < end:
                    self.changed.wait(end - time.monotonic())
                msgs, sub["queue"] = sub["queue"][:limit], sub["queue"][limit:]
                times = self.times(sub).replace("wsnt:", "tev:")
                return f"<tev:PullMessagesResponse>{times}{''.join(msgs)}</tev:PullMessagesResponse>"
            if op == "Renew":
                secs = min(seconds(body.findtext(".//{*}TerminationTime", ""), 60), self.args.max_lifetime)
                sub["expires"] = time.monotonic() + secs
                return f"<wsnt:RenewResponse>{self.times(sub)}</wsnt:RenewResponse>"
            if op == "Unsubscribe":
                del self.subs[n]
                return "<wsnt:UnsubscribeResponse/>"
        return fault("ter:ActionNotSupported", "ter:ActionNotSupported", f"{op} is not supported by a subscription")

    def profile(self, token, name, w, h, ptz):
        p = (
            f'<trt:Profiles fixed="true" token="{token}"><tt:Name>{name}</tt:Name>'
            '<tt:VideoSourceConfiguration token="VideoSourceToken"><tt:Name>VideoSourceConfig</tt:Name>'
            "<tt:UseCount>2</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>"
            f'<tt:Bounds height="1080" width="1920" y="0" x="0"/></tt:VideoSourceConfiguration>'
            f'<tt:VideoEncoderConfiguration token="VideoEncoderToken_{token[-1]}"><tt:Name>VideoEncoder_{token[-1]}</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height></tt:Resolution>"
            "<tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl>"
            "<tt:H264><tt:GovLength>50</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>"
            "<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
        )
        if ptz:
            p += (
                '<tt:PTZConfiguration token="PTZToken"><tt:Name>PTZ</tt:Name><tt:UseCount>1</tt:UseCount>'
                "<tt:NodeToken>PTZNODETOKEN</tt:NodeToken>"
                "<tt:DefaultContinuousPanTiltVelocitySpace>http://www.onvif.org/ver10/tptz/PanTiltSpaces/"
                "VelocityGenericSpace</tt:DefaultContinuousPanTiltVelocitySpace>"
                "<tt:DefaultPTZTimeout>PT5S</tt:DefaultPTZTimeout></tt:PTZConfiguration>"
            )
        return p + "</trt:Profiles>"


def utc(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_date_time(t):
    d = datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc)
    return (f"<tt:UTCDateTime><tt:Time><tt:Hour>{d.hour}</tt:Hour><tt:Minute>{d.minute}</tt:Minute>"
            f"<tt:Second>{d.second}</tt:Second></tt:Time><tt:Date><tt:Year>{d.year}</tt:Year>"
            f"<tt:Month>{d.month}</tt:Month><tt:Day>{d.day}</tt:Day></tt:Date></tt:UTCDateTime>")


def seconds(xs_duration, default):
    """PT10S / PT1M / PT1M30S as seconds (the durations clients send here)."""
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", (xs_duration or "").strip())
    if not m or not any(m.groups()):
        return default
    h, mi, sec = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)


def fault(code, subcode, reason):
    return (
        "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value>"
        f"<SOAP-ENV:Subcode><SOAP-ENV:Value>{code}</SOAP-ENV:Value><SOAP-ENV:Subcode><SOAP-ENV:Value>{subcode}"
        "</SOAP-ENV:Value></SOAP-ENV:Subcode></SOAP-ENV:Subcode></SOAP-ENV:Code>"
        f'<SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">{esc(reason)}</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>'
    )


def not_authorized():
    return (
        "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value>"
        "<SOAP-ENV:Subcode><SOAP-ENV:Value>ter:NotAuthorized</SOAP-ENV:Value></SOAP-ENV:Subcode></SOAP-ENV:Code>"
        '<SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">Sender not Authorized</SOAP-ENV:Text></SOAP-ENV:Reason>'
        "</SOAP-ENV:Fault>"
    )


SERVICES = {
    "/onvif/device_service": "device",
    "/onvif/media_service": "media",
    "/onvif/ptz_service": "ptz",
    "/onvif/event_service": "events",
}


def handler(dev):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, ctype, data):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def do_GET(self):
            if self.path == "/sim/requests":
                with dev.lock:
                    data = json.dumps(dev.requests).encode()
                return self.reply(200, "application/json", data)
            if self.path.startswith("/sim/motion"):
                on = self.path.endswith("on=1")
                dev.set_motion(on)
                return self.reply(200, "application/json", json.dumps({"motion": on}).encode())
            if self.path.startswith("/onvif/snapshot.jpg"):
                return self.reply(200, "image/jpeg", b"\xff\xd8\xff\xd9")
            self.reply(404, "text/plain", b"not found")

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n)
            path = self.path.split("?")[0]
            service, sub_id = SERVICES.get(path), None
            if path.startswith("/onvif/subscription/") and path.rsplit("/", 1)[1].isdigit():
                service, sub_id = "subscription", int(path.rsplit("/", 1)[1])
            if self.path.startswith("/sim/motion"):
                return self.do_GET()
            if service is None:
                return self.reply(404, "text/plain", b"no such service")
            try:
                env = ET.fromstring(raw)
                body = env.find("s:Body", NS)
                req = next(iter(body))
            except Exception as e:
                return self.reply(400, "application/soap+xml", (ENV_OPEN + fault("ter:InvalidArgs", "ter:InvalidArgs", f"bad request: {e}") + ENV_CLOSE).encode())
            op = local(req.tag)
            auth = dev.auth(env)
            to = env.findtext("s:Header/wsa:To", "", NS).strip()
            with dev.lock:
                dev.requests.append(
                    {"service": service, "op": op, "body": ET.tostring(req, encoding="unicode"), "auth": auth, "to": to}
                )
            if auth != "ok" and op != "GetSystemDateAndTime":
                return self.reply(400, "application/soap+xml; charset=utf-8", (ENV_OPEN + not_authorized() + ENV_CLOSE).encode())
            text = dev.answer(service, op, req, sub_id)
            status = 400 if "<SOAP-ENV:Fault>" in text else 200
            self.reply(status, "application/soap+xml; charset=utf-8", (ENV_OPEN + text + ENV_CLOSE).encode())

    return H


def probe_match(dev, relates_to):
    b = dev.base()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        f"<SOAP-ENV:Header><wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
        f"<wsa:RelatesTo>{esc(relates_to)}</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>"
        "</SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{dev.uuid}</wsa:Address></wsa:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
        "<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/type/ptz "
        f"onvif://www.onvif.org/Profile/Streaming onvif://www.onvif.org/name/{dev.args.name} "
        "onvif://www.onvif.org/hardware/SC-PTZ-2 onvif://www.onvif.org/location/country/nowhere</d:Scopes>"
        f"<d:XAddrs>{b}/onvif/device_service</d:XAddrs><d:MetadataVersion>10</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )


def discovery(dev, sock):
    while True:
        data, peer = sock.recvfrom(65536)
        try:
            env = ET.fromstring(data)
            probe = env.find("s:Body/d:Probe", NS)
            msg_id = env.findtext("s:Header/a:MessageID", "", NS).strip()
        except Exception:
            continue
        if probe is None or not msg_id:
            continue
        types = probe.findtext("d:Types", "", NS)
        if types and "NetworkVideoTransmitter" not in types:
            continue
        with dev.lock:
            dev.requests.append({"service": "discovery", "op": "Probe", "body": data.decode("utf-8", "replace"), "auth": ""})
        # Two answers, as cameras often send: the client must count one device.
        for _ in range(2):
            sock.sendto(probe_match(dev, msg_id).encode(), peer)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--discovery-host", default="127.0.0.1")
    p.add_argument("--discovery-port", type=int, default=0)
    p.add_argument("--multicast", action="store_true", help="also join 239.255.255.250 on loopback")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="secret")
    p.add_argument("--name", default="SimCam")
    p.add_argument("--no-events", action="store_true", help="a camera without the Events service")
    p.add_argument("--clock-offset", type=float, default=0, help="the camera's clock minus the host's (s)")
    p.add_argument("--max-lifetime", type=float, default=3600,
                   help="seconds a subscription lives at most from its creation or renewal, whatever was asked")
    p.add_argument("--main-uri", required=True)
    p.add_argument("--sub-uri", required=True)
    args = p.parse_args()
    dev = Device(args)
    srv = ThreadingHTTPServer((args.host, args.http_port), handler(dev))
    srv.daemon_threads = True
    dev.http_port = srv.server_address[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.multicast:
        sock.bind(("0.0.0.0", args.discovery_port))
        mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton("127.0.0.1"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    else:
        sock.bind((args.discovery_host, args.discovery_port))
    threading.Thread(target=discovery, args=(dev, sock), daemon=True).start()
    print(json.dumps({"http": dev.http_port, "discovery": sock.getsockname()[1]}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
