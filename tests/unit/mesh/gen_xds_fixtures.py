#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Write xds_fixtures.h: xDS/CA messages serialized by the Python protobuf library, as C byte arrays.

The C decoders (protobuf-c, generated from the same proto/ tree) are tested against bytes produced by an independent
implementation. Message classes are generated with protoc --python_out into a temporary directory.
Usage: gen_xds_fixtures.py PROTO_ROOT OUT_HEADER
"""
import ipaddress
import os
import subprocess
import sys
import tempfile

PROTOS = ['google/rpc/status.proto', 'envoy/config/core/v3/base.proto', 'envoy/service/discovery/v3/discovery.proto',
          'istio/workload/workload.proto', 'istio/security/authorization.proto', 'istio/v1/auth/ca.proto']
ADDR = 'type.googleapis.com/istio.workload.Address'
AUTHZ = 'type.googleapis.com/istio.security.Authorization'


def ip(s):
    return ipaddress.ip_address(s).packed


def build(pb):
    d, w, a, ca, st = pb
    from google.protobuf import any_pb2, struct_pb2
    fx = {}

    # ---- istio.workload.Address: a Workload with every field ----
    wl = w.Address()
    x = wl.workload
    x.uid = 'Kubernetes//Pod/default/a'
    x.name = 'a'
    x.namespace = 'default'
    x.addresses.extend([ip('10.0.0.1'), ip('fd00::1')])
    x.hostname = ''
    x.network = 'net1'
    x.tunnel_protocol = w.HBONE
    x.trust_domain = 'td.example'
    x.service_account = 'sa-a'
    x.waypoint.address.network = 'net1'
    x.waypoint.address.address = ip('10.0.0.9')
    x.waypoint.hbone_mtls_port = 15008
    x.network_gateway.hostname.namespace = 'istio-system'
    x.network_gateway.hostname.hostname = 'eastwest.istio-system.svc.cluster.local'
    x.network_gateway.hbone_mtls_port = 15008
    x.node = 'node-1'
    x.canonical_name = 'app-a'
    x.canonical_revision = 'v1'
    x.workload_type = w.POD
    x.workload_name = 'deploy-a'
    x.native_tunnel = True
    x.application_tunnel.protocol = w.ApplicationTunnel.PROXY
    x.application_tunnel.port = 15088
    x.services['default/svc.default.svc.cluster.local'].ports.add(service_port=80, target_port=8080,
                                                                  app_protocol=w.HTTP2)
    x.authorization_policies.append('default/pol')
    x.status = w.UNHEALTHY
    x.cluster_id = 'Kubernetes'
    x.locality.region = 'r1'
    x.locality.zone = 'z1'
    x.locality.subzone = 's1'
    x.network_mode = w.HOST_NETWORK
    e = x.extensions.add(name='ext1')
    e.config.type_url = 'type.googleapis.com/google.protobuf.Empty'
    x.capacity.value = 7
    fx['address_workload'] = wl.SerializeToString()

    # ---- istio.workload.Address: a Service with every field ----
    sv = w.Address()
    s = sv.service
    s.name = 'svc'
    s.namespace = 'default'
    s.hostname = 'svc.default.svc.cluster.local'
    s.addresses.add(network='', address=ip('10.96.0.10'))
    s.addresses.add(network='net1', address=ip('10.200.0.0'), length=0)  # present, value 0
    s.addresses.add(network='net1', address=ip('fd00:200::'), length=64)
    s.ports.add(service_port=80, target_port=8080, app_protocol=w.HTTP11)
    s.ports.add(service_port=443, target_port=0, app_protocol=w.TLS)
    s.subject_alt_names.append('spiffe://td.example/ns/default/sa/extra')
    s.waypoint.hostname.namespace = 'default'
    s.waypoint.hostname.hostname = 'waypoint.default.svc.cluster.local'
    s.waypoint.hbone_mtls_port = 15008
    s.load_balancing.routing_preference.extend([w.LoadBalancing.NETWORK, w.LoadBalancing.REGION,
                                                w.LoadBalancing.ZONE])
    s.load_balancing.mode = w.LoadBalancing.FAILOVER
    s.load_balancing.health_policy = w.LoadBalancing.ALLOW_ALL
    s.ip_families = w.DUAL
    s.canonical = True
    s.ingress_use_waypoint = True
    ww = s.weighted_waypoints.add(weight=30)
    ww.destination.address.address = ip('10.0.0.30')
    s.visibility = w.Service.NAMESPACE
    fx['address_service'] = sv.SerializeToString()

    # ---- istio.security.Authorization with every part ----
    az = a.Authorization(name='pol', namespace='default', scope=a.WORKLOAD_SELECTOR, action=a.DENY, dry_run=True)
    m = az.rules.add().clauses.add().matches.add()
    m.namespaces.add(exact='ns1')
    m.not_namespaces.add(prefix='kube-')
    m.principals.add(suffix='/sa/admin')
    m.not_principals.add().presence.SetInParent()
    m.source_ips.add(address=ip('10.0.0.0'), length=8)
    m.not_source_ips.add(address=ip('10.1.2.3'), length=32)
    m.destination_ips.add(address=ip('fd00::'), length=8)
    m.not_destination_ips.add(address=ip('fd00::1'), length=128)
    m.destination_ports.extend([80, 443, 8080])
    m.not_destination_ports.append(22)
    m.service_accounts.add(namespace='default', serviceAccount='sleep')
    m.not_service_accounts.add(namespace='default', serviceAccount='bad')
    az.rules.add().clauses.add().matches.add().principals.add(exact='spiffe://cluster.local/ns/a/sa/b')
    fx['authorization'] = az.SerializeToString()

    # Match with destination_ports unpacked (field 9 as two varints), then not_destination_ports packed.
    raw = bytes([0x48, 80, 0x48, 0xbb, 0x03, 0x52, 0x01, 22])
    assert list(a.Match.FromString(raw).destination_ports) == [80, 443]
    fx['match_unpacked_ports'] = raw

    # ---- DeltaDiscoveryRequest with every field we use ----
    rq = d.DeltaDiscoveryRequest(type_url=ADDR, response_nonce='n1')
    rq.node.id = 'ztunnel~10.0.0.5~zt-1.istio-system~istio-system.svc.cluster.local'
    rq.node.metadata.fields['NAME'].string_value = 'zt-1'
    rq.node.metadata.fields['NUM'].number_value = 2.5
    rq.node.metadata.fields['FLAG'].bool_value = True
    rq.node.metadata.fields['LIST'].list_value.values.add().string_value = 'x'
    rq.node.metadata.fields['OBJ'].struct_value.fields['k'].string_value = 'v'
    rq.resource_names_subscribe.append('sub1')
    rq.resource_names_unsubscribe.append('unsub1')
    rq.initial_resource_versions['x'] = '1'
    rq.initial_resource_versions['y'] = '2'
    rq.error_detail.code = 0
    rq.error_detail.message = 'bad: reason'
    fx['request_full'] = rq.SerializeToString()

    # ---- responses for the state machine ----
    def resp(type_url, nonce, resources=(), removed=()):
        r = d.DeltaDiscoveryResponse(type_url=type_url, nonce=nonce, system_version_info='v9')
        r.control_plane.identifier = 'istiod-1'
        for name, version, payload, aliases, any_type in resources:
            res = r.resources.add(name=name, version=version)
            res.aliases.extend(aliases)
            res.resource.type_url = any_type or type_url
            res.resource.value = payload
            res.ttl.seconds = 30
            res.cache_control.do_not_cache = False
        r.removed_resources.extend(removed)
        return r.SerializeToString()

    fx['resp_two'] = resp(ADDR, 'n1', [
        ('Kubernetes//Pod/default/a', '1', fx['address_workload'], ['net1/10.0.0.1', 'net1/fd00::1'], None),
        ('default/svc.default.svc.cluster.local', '7', fx['address_service'], ['/10.96.0.10'], None)])
    fx['resp_mixed'] = resp(ADDR, 'n2', [
        ('good', '2', fx['address_workload'], [], None),
        ('bad', '2', b'\xff\xff\xff', [], None),
        ('wrongtype', '2', fx['authorization'], [], AUTHZ),
        ('', '2', fx['address_workload'], [], None)])
    fx['resp_remove'] = resp(ADDR, 'n3', removed=['Kubernetes//Pod/default/a', 'never-seen'])
    fx['resp_unknown'] = resp('type.googleapis.com/envoy.config.cluster.v3.Cluster', 'n4',
                              [('c1', '1', b'\x0a\x02c1', [], None)])
    fx['resp_authz'] = resp(AUTHZ, 'n5', [('default/pol', '3', fx['authorization'], [], None)])
    fx['resp_update'] = resp(ADDR, 'n6', [('Kubernetes//Pod/default/a', '2', fx['address_workload'], [], None)])

    # ---- CA ----
    cq = ca.IstioCertificateRequest(csr='-----BEGIN CERTIFICATE REQUEST-----\nX\n-----END CERTIFICATE REQUEST-----\n',
                                    validity_duration=3600)
    cq.metadata.fields['ImpersonatedIdentity'].string_value = 'spiffe://cluster.local/ns/default/sa/sleep'
    fx['ca_request'] = cq.SerializeToString()
    fx['ca_response'] = ca.IstioCertificateResponse(cert_chain=['leaf\n', 'inter\n', 'root\n']).SerializeToString()

    status = st.Status(code=3, message='invalid')
    status.details.add(type_url='type.googleapis.com/google.protobuf.Empty', value=b'')
    fx['status'] = status.SerializeToString()
    return fx


def main():
    root, out = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(['protoc', '--proto_path=' + root, '--python_out=' + tmp] + PROTOS, check=True)
        sys.path.insert(0, tmp)
        from envoy.service.discovery.v3 import discovery_pb2
        from google.rpc import status_pb2
        from istio.security import authorization_pb2
        from istio.v1.auth import ca_pb2
        from istio.workload import workload_pb2
        fx = build((discovery_pb2, workload_pb2, authorization_pb2, ca_pb2, status_pb2))
    lines = ['/* SPDX-License-Identifier: Apache-2.0 */',
             '/* Generated by tests/unit/mesh/gen_xds_fixtures.py (Python protobuf encoder). Do not edit. */',
             '#ifndef XDS_FIXTURES_H', '#define XDS_FIXTURES_H', '#include <stddef.h>', '#include <stdint.h>', '']
    for name, data in fx.items():
        body = ', '.join('0x%02x' % b for b in data)
        lines.append('static const uint8_t fx_%s[] = {%s};' % (name, body or '0'))
        lines.append('static const size_t fx_%s_len = %d;' % (name, len(data)))
    lines += ['', '#endif', '']
    tmp_out = out + '.tmp'
    with open(tmp_out, 'w') as f:
        f.write('\n'.join(lines))
    os.replace(tmp_out, out)


if __name__ == '__main__':
    main()
