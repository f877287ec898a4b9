#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Write xds_convert_fixtures.h: istio.workload.Address and istio.security.Authorization payloads serialized by the
Python protobuf library, as C byte arrays, for the conversion-layer tests (tests/unit/mesh/test_xds_convert.c).

Every fixture is the Any.value of one resource. Names say what the payload holds: good_* must be accepted, bad_*
must be rejected (the test checks the reason), enum_* walk every value of every enum.
Usage: gen_xds_convert_fixtures.py PROTO_ROOT OUT_HEADER
"""
import ipaddress
import os
import subprocess
import sys
import tempfile

PROTOS = ['istio/workload/workload.proto', 'istio/security/authorization.proto']


def ip(s):
    return ipaddress.ip_address(s).packed


def build(w, a):
    fx = {}

    def wl(uid='Kubernetes//Pod/default/a', **kw):
        m = w.Address()
        x = m.workload
        x.uid = uid
        x.name = 'a'
        x.namespace = 'default'
        x.addresses.append(ip('10.0.0.1'))
        x.tunnel_protocol = w.HBONE
        for k, v in kw.items():
            setattr(x, k, v)
        return m

    # ---- a Workload with every field ----
    m = wl()
    x = m.workload
    x.addresses.append(ip('fd00::1'))
    x.network = 'net1'
    x.trust_domain = 'td.example'
    x.service_account = 'sa-a'
    x.waypoint.address.network = 'net1'
    x.waypoint.address.address = ip('10.0.0.9')
    x.waypoint.hbone_mtls_port = 15009
    x.network_gateway.hostname.namespace = 'istio-system'
    x.network_gateway.hostname.hostname = 'eastwest.istio-system.svc.cluster.local'
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
    x.services['default/other.default.svc.cluster.local'].ports.add(service_port=9090, target_port=0)
    x.authorization_policies.extend(['default/pol', 'istio-system/istio_converted_static_strict'])
    x.status = w.UNHEALTHY
    x.cluster_id = 'Kubernetes'
    x.locality.region = 'r1'
    x.locality.zone = 'z1'
    x.network_mode = w.STANDARD
    e = x.extensions.add(name='ext1')
    e.config.type_url = 'type.googleapis.com/google.protobuf.Empty'
    x.capacity.value = 7
    fx['good_workload_full'] = m

    # defaults: empty trust domain, service account, no capacity, waypoint by hostname without port
    m = wl(uid='Kubernetes//Pod/default/d')
    m.workload.waypoint.hostname.namespace = 'default'
    m.workload.waypoint.hostname.hostname = 'waypoint.default.svc.cluster.local'
    fx['good_workload_defaults'] = m
    m = wl(uid='Kubernetes//Pod/default/cap0')
    m.workload.capacity.value = 0
    fx['good_workload_capacity0'] = m
    m = wl(uid='Kubernetes//Pod/default/b')
    del m.workload.addresses[:]
    m.workload.addresses.append(ip('10.0.0.2'))
    fx['good_workload_b'] = m
    # claims a's address 10.0.0.1 (a conflict resolved by the newest claimant)
    fx['good_workload_c_steals'] = wl(uid='Kubernetes//Pod/default/c')
    # host network: its address is not indexed, so it may share an IP
    fx['good_workload_hostnet'] = wl(uid='Kubernetes//Pod/kube-system/h', network_mode=w.HOST_NETWORK)

    # ---- every enum value ----
    for name, val in (('none', w.NONE), ('hbone', w.HBONE)):
        fx['enum_tunnel_' + name] = wl(uid='u', tunnel_protocol=val)
    for name, val in (('healthy', w.HEALTHY), ('unhealthy', w.UNHEALTHY)):
        fx['enum_status_' + name] = wl(uid='u', status=val)
    for name, val in (('standard', w.STANDARD), ('host', w.HOST_NETWORK)):
        fx['enum_netmode_' + name] = wl(uid='u', network_mode=val)
    for name, val in (('deployment', w.DEPLOYMENT), ('cronjob', w.CRONJOB), ('pod', w.POD), ('job', w.JOB)):
        fx['enum_wltype_' + name] = wl(uid='u', workload_type=val)
    for name, val in (('none', w.ApplicationTunnel.NONE), ('proxy', w.ApplicationTunnel.PROXY)):
        m = wl(uid='u')
        m.workload.application_tunnel.protocol = val
        fx['enum_apptunnel_' + name] = m
    for name, val in (('unknown', w.UNKNOWN), ('http11', w.HTTP11), ('http2', w.HTTP2), ('grpc', w.GRPC),
                      ('tcp', w.TCP), ('tls', w.TLS)):
        m = wl(uid='u')
        m.workload.services['default/s'].ports.add(service_port=80, app_protocol=val)
        fx['enum_appproto_' + name] = m

    # ---- bad workloads ----
    fx['bad_legacy_mtls'] = wl(tunnel_protocol=w.LEGACY_ISTIO_MTLS)
    fx['bad_tunnel_unknown'] = wl(tunnel_protocol=7)
    fx['bad_status_unknown'] = wl(status=5)
    fx['bad_netmode_unknown'] = wl(network_mode=9)
    fx['bad_wltype_unknown'] = wl(workload_type=4)
    m = wl()
    m.workload.addresses.append(b'\x01\x02\x03\x04\x05')
    fx['bad_addr_len'] = m
    m = wl()
    m.workload.addresses.append(ip('10.0.0.1'))
    fx['bad_addr_twice'] = m
    fx['bad_uid_empty'] = wl(uid='')
    fx['bad_uid_mismatch'] = wl(uid='Kubernetes//Pod/default/zzz')
    m = wl()
    m.workload.waypoint.hbone_mtls_port = 15008
    fx['bad_waypoint_nodest'] = m
    m = wl()
    m.workload.waypoint.address.address = b'\x01\x02'
    fx['bad_waypoint_addr'] = m
    m = wl()
    m.workload.waypoint.address.address = ip('10.0.0.9')
    m.workload.waypoint.hbone_mtls_port = 70000
    fx['bad_waypoint_port'] = m
    m = wl()
    m.workload.services['nokey'].ports.add(service_port=80)
    fx['bad_service_key'] = m
    m = wl()
    m.workload.services['default/s'].ports.add(service_port=80, target_port=65536)
    fx['bad_target_port'] = m
    m = wl()
    m.workload.services['default/s'].ports.add(service_port=80, app_protocol=6)
    fx['bad_appproto_unknown'] = m
    fx['bad_identity_slash'] = wl(service_account='a/b')
    fx['bad_identity_long'] = wl(trust_domain='t' * 300)
    m = wl()
    m.workload.application_tunnel.protocol = 2
    fx['bad_apptunnel_unknown'] = m
    m = wl()
    m.workload.network_gateway.hbone_mtls_port = 15008
    fx['bad_netgw_nodest'] = m
    fx['bad_address_empty'] = w.Address()

    # ---- services ----
    def svc(ns='default', host='svc.default.svc.cluster.local'):
        m = w.Address()
        s = m.service
        s.name = 'svc'
        s.namespace = ns
        s.hostname = host
        s.addresses.add(network='', address=ip('10.96.0.10'))
        s.ports.add(service_port=80, target_port=8080, app_protocol=w.HTTP11)
        return m

    m = svc()
    s = m.service
    s.addresses.add(network='net1', address=ip('fd00:96::10'))
    s.addresses.add(network='net1', address=ip('10.200.0.0'), length=16)  # CIDR: validated, not a VIP
    s.addresses.add(network='net1', address=ip('10.96.0.11'), length=32)  # explicit host length: a VIP
    s.ports.add(service_port=443, target_port=0, app_protocol=w.TLS)
    s.subject_alt_names.append('spiffe://td.example/ns/default/sa/extra')
    s.waypoint.hostname.namespace = 'default'
    s.waypoint.hostname.hostname = 'waypoint.default.svc.cluster.local'
    s.load_balancing.routing_preference.extend([w.LoadBalancing.NETWORK, w.LoadBalancing.REGION])
    s.load_balancing.mode = w.LoadBalancing.FAILOVER
    s.load_balancing.health_policy = w.LoadBalancing.ALLOW_ALL
    s.ip_families = w.DUAL
    s.canonical = True
    s.ingress_use_waypoint = True
    ww = s.weighted_waypoints.add(weight=30)
    ww.destination.address.address = ip('10.0.0.30')
    s.visibility = w.Service.NAMESPACE
    fx['good_service_full'] = m
    m = svc(host='headless.default.svc.cluster.local')
    del m.service.addresses[:]
    fx['good_service_headless'] = m
    fx['good_service_steals'] = svc(host='steal.default.svc.cluster.local')  # VIP 10.96.0.10 again

    for name, val in (('unspecified', w.LoadBalancing.UNSPECIFIED_MODE), ('strict', w.LoadBalancing.STRICT),
                      ('failover', w.LoadBalancing.FAILOVER), ('passthrough', w.LoadBalancing.PASSTHROUGH)):
        m = svc()
        m.service.load_balancing.mode = val
        fx['enum_lbmode_' + name] = m
    for name, val in (('only_healthy', w.LoadBalancing.ONLY_HEALTHY), ('allow_all', w.LoadBalancing.ALLOW_ALL)):
        m = svc()
        m.service.load_balancing.health_policy = val
        fx['enum_lbhealth_' + name] = m
    m = svc()
    m.service.load_balancing.routing_preference.extend(range(0, 7))
    fx['enum_lbscope_all'] = m
    for v in range(4):
        m = svc()
        m.service.ip_families = v
        fx['enum_ipfamilies_%d' % v] = m
    for v in range(2):
        m = svc()
        m.service.visibility = v
        fx['enum_visibility_%d' % v] = m

    fx['bad_svc_no_ns'] = svc(ns='')
    fx['bad_svc_no_host'] = svc(host='')
    m = svc()
    m.service.ports.add(service_port=0, target_port=1)
    fx['bad_svc_port0'] = m
    m = svc()
    m.service.ports.add(service_port=80, target_port=1)
    fx['bad_svc_port_twice'] = m
    m = svc()
    m.service.ports.add(service_port=70000)
    fx['bad_svc_port_range'] = m
    m = svc()
    m.service.addresses.add(network='', address=b'\x0a\x00')
    fx['bad_svc_addr_len'] = m
    m = svc()
    m.service.addresses.add(network='', address=ip('10.1.0.0'), length=33)
    fx['bad_svc_prefix'] = m
    m = svc()
    m.service.load_balancing.mode = 4
    fx['bad_svc_lbmode'] = m
    m = svc()
    m.service.load_balancing.health_policy = 2
    fx['bad_svc_lbhealth'] = m
    m = svc()
    m.service.load_balancing.routing_preference.append(7)
    fx['bad_svc_lbscope'] = m
    m = svc()
    m.service.ip_families = 4
    fx['bad_svc_ipfam'] = m
    m = svc()
    m.service.visibility = 2
    fx['bad_svc_visibility'] = m
    m = svc()
    m.service.weighted_waypoints.add(weight=1)
    fx['bad_svc_ww_nodest'] = m
    m = svc()
    m.service.addresses.add(network='x', address=ip('10.96.0.10'))
    fx['bad_svc_vip_twice'] = m

    # ---- Authorization ----
    def pol(name='pol', ns='default', **kw):
        return a.Authorization(name=name, namespace=ns, **kw)

    az = pol(scope=a.WORKLOAD_SELECTOR, action=a.DENY, dry_run=True)
    mm = az.rules.add().clauses.add().matches.add()
    mm.namespaces.add(exact='ns1')
    mm.not_namespaces.add(prefix='kube-')
    mm.principals.add(suffix='/sa/admin')
    mm.not_principals.add().presence.SetInParent()
    mm.source_ips.add(address=ip('10.0.0.0'), length=8)
    mm.not_source_ips.add(address=ip('10.1.2.3'), length=32)
    mm.destination_ips.add(address=ip('fd00::'), length=8)
    mm.not_destination_ips.add(address=ip('fd00::1'), length=128)
    mm.destination_ports.extend([80, 443, 8080])
    mm.not_destination_ports.append(22)
    mm.service_accounts.add(namespace='default', serviceAccount='sleep')
    mm.not_service_accounts.add(namespace='default', serviceAccount='bad')
    az.rules.add().clauses.add().matches.add().principals.add(exact='cluster.local/ns/a/sa/b')
    fx['good_authz_full'] = az
    fx['good_authz_allow_ns'] = pol(name='allow', scope=a.NAMESPACE, action=a.ALLOW)
    g = pol(name='all', ns='istio-system', scope=a.GLOBAL, action=a.ALLOW)
    g.rules.add()
    fx['good_authz_global_allow_all'] = g
    for name, val in (('global', a.GLOBAL), ('namespace', a.NAMESPACE), ('selector', a.WORKLOAD_SELECTOR)):
        fx['enum_scope_' + name] = pol(scope=val)
    for name, val in (('allow', a.ALLOW), ('deny', a.DENY)):
        fx['enum_action_' + name] = pol(action=val)
    fx['bad_authz_scope'] = pol(scope=3)
    fx['bad_authz_action'] = pol(action=2)
    fx['bad_authz_name'] = pol(name='other')
    b = pol()
    b.rules.add().clauses.add().matches.add().principals.add()
    fx['bad_authz_strmatch'] = b
    b = pol()
    b.rules.add().clauses.add().matches.add().source_ips.add(address=b'\x01\x02\x03', length=8)
    fx['bad_authz_ip_len'] = b
    b = pol()
    b.rules.add().clauses.add().matches.add().destination_ips.add(address=ip('10.0.0.0'), length=40)
    fx['bad_authz_prefix'] = b
    b = pol()
    b.rules.add().clauses.add().matches.add().destination_ports.append(65536)
    fx['bad_authz_port'] = b

    out = {}
    for k, v in fx.items():
        out[k] = v.SerializeToString()
    # hand-made: packed and unpacked ports in one Match inside a Clause inside a Rule inside an Authorization
    match = bytes([0x48, 80, 0x48, 0xbb, 0x03, 0x52, 0x01, 22])
    clause = bytes([0x12, len(match)]) + match
    rule = bytes([0x0a, len(clause)]) + clause
    head = pol(name='ports').SerializeToString()
    out['good_authz_unpacked_ports'] = head + bytes([0x2a, len(rule)]) + rule
    parsed = a.Authorization.FromString(out['good_authz_unpacked_ports'])
    assert list(parsed.rules[0].clauses[0].matches[0].destination_ports) == [80, 443]
    out['bad_garbage'] = b'\xff\xff\xff'
    return out


def main():
    root, out = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(['protoc', '--proto_path=' + root, '--python_out=' + tmp] + PROTOS, check=True)
        sys.path.insert(0, tmp)
        from istio.security import authorization_pb2
        from istio.workload import workload_pb2
        fx = build(workload_pb2, authorization_pb2)
    lines = ['/* SPDX-License-Identifier: Apache-2.0 */',
             '/* Generated by tests/unit/mesh/gen_xds_convert_fixtures.py (Python protobuf encoder). Do not edit. */',
             '#ifndef XDS_CONVERT_FIXTURES_H', '#define XDS_CONVERT_FIXTURES_H', '#include <stddef.h>',
             '#include <stdint.h>', '']
    for name, data in fx.items():
        body = ', '.join('0x%02x' % b for b in data)
        lines.append('static const uint8_t cfx_%s[] = {%s};' % (name, body or '0'))
        lines.append('static const size_t cfx_%s_len = %d;' % (name, len(data)))
    lines += ['', '#endif', '']
    tmp_out = out + '.tmp'
    with open(tmp_out, 'w') as f:
        f.write('\n'.join(lines))
    os.replace(tmp_out, out)


if __name__ == '__main__':
    main()
