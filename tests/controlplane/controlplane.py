#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A small istiod stand-in for tests: Delta ADS and the Istio CA over TLS on 127.0.0.1.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf). Message classes are generated at start with
`protoc --python_out` from the project's own proto/ tree (ztunnel-wire-facts.md sections 3.4 to 3.6); the gRPC
services use generic handlers on raw bytes, so no gRPC stubs are needed.

At start a throw-away PKI is made with the openssl CLI in the PKI directory (--pki-dir, default the work directory;
an existing one is reused, so several control planes, or one restarted, share a root): a root CA, a server
certificate for localhost / 127.0.0.1, and an intermediate CA (pathlen 0) that signs workload certificates with
python3-cryptography, valid exactly for the requested validity_duration. Then one line is printed:

    CONTROLPLANE port=<port> root=<root.pem> workdir=<dir> events=<events.jsonl>

Every request received, every certificate issued (identity, serial in hex, validity) and every check made is
appended as one JSON object per line to the events file (kept across restarts with the same work directory).

Behaviour is driven by a scenario (JSON file, --scenario) or by the shortcut flags, which build one:
    {"streams": [[step, ...], ...],       # steps for the 1st, 2nd, ... ADS stream; later streams reuse the last
     "ca": "ok" | "refuse" | "wrong_identity",
     "ca_refuse": [spiffe identity, ...],  # CSRs for these are refused (UNAUTHENTICATED), the others signed
     "on_demand": [resource, ...]}         # Address resources served when a client subscribes to their name/alias
Steps:
    {"wait_initial": true, "expect_versions": {"address": {name: version}}}   wait for both initial requests
    {"push": "address"|"authorization", "resources": [res...], "expect": "ack"|"nack", "nack_contains": "..."}
    {"remove": "address"|"authorization", "names": [...], "expect": "ack"}
    {"end": "OK"|"UNAVAILABLE"|..., "message": "..."}                         end the stream with that status
    {"sleep": seconds}
A resource is {"name", "version", "aliases": [...]} plus one of:
    "workload": Workload in proto JSON, with "ips": ["10.0.0.1", ...] as a shortcut for the bytes addresses
    "service": Service in proto JSON, with "vips": ["network/ip", ...] as a shortcut for addresses
    "authorization": Authorization in proto JSON
    "raw_hex": bytes sent as the Any value as is (a malformed resource)
"""
import argparse
import ipaddress
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService'
CA_SERVICE = 'istio.v1.auth.IstioCertificateService'
TYPE_URLS = {
    'address': 'type.googleapis.com/istio.workload.Address',
    'authorization': 'type.googleapis.com/istio.security.Authorization',
}
PROTOS = [
    'google/rpc/status.proto',
    'envoy/config/core/v3/base.proto',
    'envoy/service/discovery/v3/discovery.proto',
    'istio/workload/workload.proto',
    'istio/security/authorization.proto',
    'istio/v1/auth/ca.proto',
]
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_ROOT = os.path.normpath(os.path.join(HERE, '..', '..', 'proto'))


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def gen_python(proto_root, outdir):
    """protoc --python_out for our protos; google/protobuf/* come from the protobuf library itself."""
    os.makedirs(outdir, exist_ok=True)
    run(['protoc', '--proto_path=' + proto_root, '--python_out=' + outdir] + PROTOS)
    sys.path.insert(0, outdir)


def make_pki(d):
    """Root CA, server cert (localhost, 127.0.0.1), workload-signing intermediate, made once in d (an existing set
    is reused). Returns a dict of paths."""
    os.makedirs(d, exist_ok=True)
    p = {k: os.path.join(d, k) for k in ('root.key', 'root.pem', 'server.key', 'server.pem', 'inter.key',
                                         'inter.pem')}
    if all(os.path.exists(v) for v in p.values()):
        return p
    ec = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']
    run(['openssl', 'genpkey'] + ec + ['-out', p['root.key']])
    run(['openssl', 'req', '-x509', '-new', '-key', p['root.key'], '-subj', '/O=cluster.local', '-days', '30',
         '-sha256', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
         '-out', p['root.pem']])
    for name, ext in (('server', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
                                 'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:istiod.istio-system.svc,'
                                 'IP:127.0.0.1\n'),
                      ('inter', 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n')):
        run(['openssl', 'genpkey'] + ec + ['-out', p[name + '.key']])
        csr = os.path.join(d, name + '.csr')
        extf = os.path.join(d, name + '.ext')
        with open(extf, 'w') as f:
            f.write(ext)
        subj = '/CN=istiod' if name == 'server' else '/O=cluster.local/CN=intermediate'
        run(['openssl', 'req', '-new', '-key', p[name + '.key'], '-subj', subj, '-out', csr])
        run(['openssl', 'x509', '-req', '-in', csr, '-CA', p['root.pem'], '-CAkey', p['root.key'],
             '-CAcreateserial', '-days', '30', '-sha256', '-extfile', extf, '-out', p[name + '.pem']])
    return p


class Events:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.failures = 0
        open(path, 'a').close()

    def log(self, **ev):
        ev['t'] = round(time.time(), 3)
        line = json.dumps(ev, sort_keys=True)
        with self.lock:
            if ev.get('event') == 'check_failed':
                self.failures += 1
            with open(self.path, 'a') as f:
                f.write(line + '\n')
        print('controlplane: ' + line, file=sys.stderr, flush=True)


class ControlPlane:
    def __init__(self, args, pki, events):
        from envoy.service.discovery.v3 import discovery_pb2
        from istio.security import authorization_pb2
        from istio.v1.auth import ca_pb2
        from istio.workload import workload_pb2
        self.d = discovery_pb2
        self.w = workload_pb2
        self.a = authorization_pb2
        self.ca = ca_pb2
        self.args = args
        self.pki = pki
        self.ev = events
        self.scenario = load_scenario(args)
        self.stream_count = 0
        self.lock = threading.Lock()

    # ---- auth (section 3.1: Bearer token + clusterid on every request) ----
    def check_auth(self, context, what):
        md = dict(context.invocation_metadata())
        ok = (md.get('authorization') == 'Bearer ' + self.args.token and
              md.get('clusterid') == self.args.cluster_id)
        self.ev.log(event='auth', call=what, ok=ok, clusterid=md.get('clusterid'),
                    has_authorization='authorization' in md)
        if not ok:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, 'bad token or cluster id')

    # ---- resources ----
    def build_any_value(self, res, kind):
        if 'raw_hex' in res:
            return bytes.fromhex(res['raw_hex'])
        from google.protobuf import json_format
        if kind == 'address':
            addr = self.w.Address()
            if 'workload' in res:
                spec = dict(res['workload'])
                ips = spec.pop('ips', [])
                json_format.ParseDict(spec, addr.workload)
                for ip in ips:
                    addr.workload.addresses.append(ipaddress.ip_address(ip).packed)
            elif 'service' in res:
                spec = dict(res['service'])
                vips = spec.pop('vips', [])
                json_format.ParseDict(spec, addr.service)
                for v in vips:
                    net, ip = v.rsplit('/', 1)
                    addr.service.addresses.add(network=net, address=ipaddress.ip_address(ip).packed)
            return addr.SerializeToString()
        authz = self.a.Authorization()
        json_format.ParseDict(res.get('authorization', {}), authz)
        return authz.SerializeToString()

    def response(self, kind, nonce, resources=(), removed=()):
        resp = self.d.DeltaDiscoveryResponse(type_url=TYPE_URLS[kind], nonce=nonce,
                                             system_version_info='test')
        for res in resources:
            r = resp.resources.add(name=res['name'], version=str(res.get('version', '1')))
            r.aliases.extend(res.get('aliases', []))
            r.resource.type_url = res.get('type_url', TYPE_URLS[kind])
            r.resource.value = self.build_any_value(res, kind)
        resp.removed_resources.extend(removed)
        return resp.SerializeToString()

    # ---- Delta ADS (section 3.4) ----
    def ads(self, request_iterator, context):
        self.check_auth(context, 'ads')
        with self.lock:
            n = self.stream_count
            self.stream_count += 1
        streams = self.scenario.get('streams') or [[]]
        steps = streams[min(n, len(streams) - 1)]
        q = queue.Queue()
        seen_types = {}

        def reader():
            try:
                for raw in request_iterator:
                    req = self.d.DeltaDiscoveryRequest.FromString(raw)
                    first = req.type_url not in seen_types
                    seen_types.setdefault(req.type_url, 0)
                    seen_types[req.type_url] += 1
                    self.ev.log(event='request', stream=n, type_url=req.type_url, first=first,
                                node_id=req.node.id if req.HasField('node') else None,
                                node_metadata={k: v.string_value for k, v in req.node.metadata.fields.items()}
                                if req.HasField('node') else None,
                                initial_resource_versions=dict(req.initial_resource_versions),
                                subscribe=list(req.resource_names_subscribe),
                                unsubscribe=list(req.resource_names_unsubscribe),
                                response_nonce=req.response_nonce,
                                error_detail=req.error_detail.message if req.HasField('error_detail') else None,
                                error_code=req.error_detail.code if req.HasField('error_detail') else None)
                    if first and not req.HasField('node'):
                        self.ev.log(event='check_failed', stream=n, what='first request without node')
                    if not first and req.HasField('node'):
                        self.ev.log(event='check_failed', stream=n, what='node repeated on a later request')
                    q.put(req)
            except Exception as e:  # the client went away
                self.ev.log(event='stream_read_end', stream=n, error=str(e))
            q.put(None)

        threading.Thread(target=reader, daemon=True).start()
        self.ev.log(event='stream_open', stream=n, steps=len(steps))
        nonce_seq = [0]

        def next_req(timeout=30.0):
            try:
                return q.get(timeout=timeout)
            except queue.Empty:
                return None

        def wait_answer(nonce, step):
            while True:
                req = next_req()
                if req is None:
                    self.ev.log(event='check_failed', stream=n, what='no answer for nonce ' + nonce)
                    return False
                if req.response_nonce != nonce:
                    continue
                nack = req.HasField('error_detail')
                want = step.get('expect')
                if want == 'ack' and nack:
                    self.ev.log(event='check_failed', stream=n, what='expected ACK', nonce=nonce,
                                error_detail=req.error_detail.message)
                elif want == 'nack' and not nack:
                    self.ev.log(event='check_failed', stream=n, what='expected NACK', nonce=nonce)
                elif want == 'nack' and step.get('nack_contains', '') not in req.error_detail.message:
                    self.ev.log(event='check_failed', stream=n, what='NACK text', nonce=nonce,
                                error_detail=req.error_detail.message)
                else:
                    self.ev.log(event='check_ok', stream=n, what=want or 'answer', nonce=nonce,
                                error_detail=req.error_detail.message if nack else None)
                return True

        for step in steps:
            if 'wait_initial' in step:
                got = {}
                while len(got) < len(TYPE_URLS):
                    req = next_req()
                    if req is None:
                        return
                    if req.type_url in TYPE_URLS.values() and req.type_url not in got:
                        got[req.type_url] = dict(req.initial_resource_versions)
                for kind, want in step.get('expect_versions', {}).items():
                    have = got.get(TYPE_URLS[kind], {})
                    ok = all(have.get(k) == v for k, v in want.items())
                    self.ev.log(event='check_ok' if ok else 'check_failed', stream=n, what='initial versions',
                                kind=kind, have=have, want=want)
                self.ev.log(event='initial_seen', stream=n)
            elif 'push' in step or 'remove' in step:
                kind = step.get('push') or step.get('remove')
                nonce_seq[0] += 1
                nonce = 's%d-n%d' % (n, nonce_seq[0])
                data = self.response(kind, nonce, step.get('resources', []), step.get('names', []))
                self.ev.log(event='push', stream=n, kind=kind, nonce=nonce,
                            names=[r['name'] for r in step.get('resources', [])], removed=step.get('names', []))
                yield data
                if step.get('expect') and not wait_answer(nonce, step):
                    return
            elif 'sleep' in step:
                time.sleep(float(step['sleep']))
            elif 'end' in step:
                code = getattr(grpc.StatusCode, step['end'])
                self.ev.log(event='stream_end', stream=n, code=step['end'])
                if code != grpc.StatusCode.OK:
                    context.abort(code, step.get('message', 'ended by scenario'))
                return
        self.ev.log(event='steps_done', stream=n)
        # then answer on-demand subscriptions (a name or an alias of a resource in the scenario's "on_demand" list;
        # a name nobody has is answered with its removal, so that the client stops waiting)
        while True:
            req = next_req(timeout=3600)
            if req is None:
                break
            names = [x for x in req.resource_names_subscribe if x != '*']
            if req.type_url != TYPE_URLS['address'] or not names:
                continue
            found = [r for r in self.scenario.get('on_demand', [])
                     if r['name'] in names or any(a in names for a in r.get('aliases', []))]
            known = {r['name'] for r in found} | {a for r in found for a in r.get('aliases', [])}
            missing = [x for x in names if x not in known]
            nonce_seq[0] += 1
            nonce = 's%d-n%d' % (n, nonce_seq[0])
            self.ev.log(event='on_demand', stream=n, asked=names, names=[r['name'] for r in found],
                        removed=missing, nonce=nonce)
            yield self.response('address', nonce, found, missing)

    # ---- CA (section 3.6) ----
    def create_certificate(self, raw, context):
        self.check_auth(context, 'ca')
        req = self.ca.IstioCertificateRequest.FromString(raw)
        imp = req.metadata.fields.get('ImpersonatedIdentity')
        identity = imp.string_value if imp is not None else 'spiffe://cluster.local/ns/istio-system/sa/ztunnel'
        mode = self.scenario.get('ca', 'ok')
        if identity in self.scenario.get('ca_refuse', []):
            mode = 'refuse'
        self.ev.log(event='csr', identity=identity, validity=req.validity_duration, mode=mode,
                    csr_ok=req.csr.startswith('-----BEGIN CERTIFICATE REQUEST-----'))
        if mode == 'refuse':
            context.abort(grpc.StatusCode.UNAUTHENTICATED, 'node is not allowed to impersonate ' + identity)
        if mode == 'wrong_identity':
            identity = 'spiffe://cluster.local/ns/other/sa/intruder'
        try:
            leaf, serial, not_after = self.sign(req.csr, identity, int(req.validity_duration or 86400))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, 'bad CSR: %s' % e)
        self.ev.log(event='issued', identity=identity, serial='%x' % serial, not_after=not_after)
        chain = [leaf, open(self.pki['inter.pem']).read(), open(self.pki['root.pem']).read()]
        return self.ca.IstioCertificateResponse(cert_chain=chain).SerializeToString()


    def sign(self, csr_pem, identity, validity_s):
        """A workload leaf for the CSR's key, signed by the intermediate: URI SAN = identity, valid from a second
        ago for validity_s seconds. Returns (PEM, serial, notAfter as a Unix time)."""
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError('the CSR signature does not verify')
        with open(self.pki['inter.pem'], 'rb') as f:
            inter = x509.load_pem_x509_certificate(f.read())
        with open(self.pki['inter.key'], 'rb') as f:
            inter_key = serialization.load_pem_private_key(f.read(), None)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        not_after = now + datetime.timedelta(seconds=validity_s)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(csr.subject).issuer_name(inter.subject).public_key(csr.public_key())
                .serial_number(serial)
                .not_valid_before(now - datetime.timedelta(seconds=1)).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                               critical=True)
                .sign(inter_key, hashes.SHA256()))
        return (cert.public_bytes(serialization.Encoding.PEM).decode(), serial, int(not_after.timestamp()))


def load_scenario(args):
    if args.scenario:
        with open(args.scenario) as f:
            return json.load(f)
    steps = [{'wait_initial': True}]
    wl = [{'name': 'Kubernetes//Pod/default/wl-%d' % i, 'version': '1',
           'aliases': ['/10.10.0.%d' % (i + 1)],
           'workload': {'uid': 'Kubernetes//Pod/default/wl-%d' % i, 'name': 'wl-%d' % i, 'namespace': 'default',
                        'ips': ['10.10.0.%d' % (i + 1)], 'tunnelProtocol': 'HBONE', 'serviceAccount': 'sa-%d' % i}}
          for i in range(args.workloads)]
    if wl:
        steps.append({'push': 'address', 'resources': wl, 'expect': 'ack'})
    steps.append({'push': 'authorization', 'expect': 'ack', 'resources': [
        {'name': 'default/allow-all', 'version': '1',
         'authorization': {'name': 'allow-all', 'namespace': 'default', 'scope': 'NAMESPACE', 'action': 'ALLOW'}}]})
    if args.malformed:
        steps.append({'push': 'address', 'expect': 'nack', 'nack_contains': 'bad/malformed',
                      'resources': [{'name': 'bad/malformed', 'version': '1', 'raw_hex': 'ffffffff'}]})
    for name in args.remove:
        steps.append({'remove': 'address', 'names': [name], 'expect': 'ack'})
    if args.restart:
        steps.append({'end': 'UNAVAILABLE', 'message': 'restart requested'})
    return {'streams': [steps, [{'wait_initial': True}]], 'ca': 'refuse' if args.refuse_csr else 'ok'}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=0, help='0 picks a free port')
    ap.add_argument('--token', default='test-token')
    ap.add_argument('--cluster-id', default='Kubernetes')
    ap.add_argument('--scenario')
    ap.add_argument('--workdir', help='default: a fresh temporary directory')
    ap.add_argument('--pki-dir', help='where the PKI is made or reused (default: the work directory)')
    ap.add_argument('--proto-root', default=DEFAULT_PROTO_ROOT)
    ap.add_argument('--workloads', type=int, default=1, help='shortcut: workloads pushed first')
    ap.add_argument('--malformed', action='store_true', help='shortcut: then push a malformed Address')
    ap.add_argument('--remove', action='append', default=[], help='shortcut: then remove this Address')
    ap.add_argument('--restart', action='store_true', help='shortcut: then end the stream with UNAVAILABLE')
    ap.add_argument('--refuse-csr', action='store_true', help='shortcut: the CA answers UNAUTHENTICATED')
    ap.add_argument('--duration', type=float, default=0, help='exit after this many seconds (0: run until killed)')
    args = ap.parse_args()

    args.workdir = args.workdir or tempfile.mkdtemp(prefix='zw-controlplane-')
    os.makedirs(args.workdir, exist_ok=True)
    gen_python(args.proto_root, os.path.join(args.workdir, 'py'))
    pki = make_pki(args.pki_dir or args.workdir)
    events = Events(os.path.join(args.workdir, 'events.jsonl'))
    cp = ControlPlane(args, pki, events)

    handlers = (
        grpc.method_handlers_generic_handler(ADS_SERVICE, {
            'DeltaAggregatedResources': grpc.stream_stream_rpc_method_handler(cp.ads)}),
        grpc.method_handlers_generic_handler(CA_SERVICE, {
            'CreateCertificate': grpc.unary_unary_rpc_method_handler(cp.create_certificate)}),
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=handlers)
    with open(pki['server.key'], 'rb') as f:
        key = f.read()
    with open(pki['server.pem'], 'rb') as f:
        cert = f.read()
    port = server.add_secure_port('%s:%d' % (args.host, args.port), grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    print('CONTROLPLANE port=%d root=%s workdir=%s events=%s' % (port, pki['root.pem'], args.workdir,
                                                                events.path), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(args.duration if args.duration > 0 else None)
    server.stop(grace=0.5)
    events.log(event='exit', failures=events.failures)
    return 1 if events.failures else 0


if __name__ == '__main__':
    sys.exit(main())
