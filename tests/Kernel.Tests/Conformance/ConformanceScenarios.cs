using static ProxyPlanes.Kernel.Tests.Conformance.ConformanceTopology;
using static ProxyPlanes.Kernel.Tests.Conformance.Expect;

namespace ProxyPlanes.Kernel.Tests.Conformance;

/// <summary>
/// The conformance table. Each row is a Service feature proven with real packets; removing any
/// feature's rendering from a data plane makes its row fail. A row expecting no answer also has a
/// probe that must be answered (a positive control), so a proxy that programs nothing fails it.
/// </summary>
public static class ConformanceScenarios
{
    private const string Vip = "10.96.1.10";

    private static Step Probes(params Probe[] probes) => new(probes);
    private static Step After(string manifests, params Probe[] probes) => new(probes, manifests);

    public static readonly IReadOnlyList<Scenario> All =
    [
        new("clusterip-spreads-over-every-endpoint",
            Service("web", Vip) + Slice("web", AllPods.Select(p => new Ep(p)).ToArray()),
            [Probes(
                new Probe("client", Vip, 80, Spread(AllPods)),
                new Probe("node", Vip, 80, Spread(AllPods)))]),

        new("no-endpoints-is-refused-at-once",
            Service("web", Vip, type: "NodePort", nodePort: 30010) + Slice("web"),
            [Probes(
                new Probe("client", Vip, 80, Refused()),
                new Probe("node", Vip, 80, Refused()),
                new Probe("local-0", Vip, 80, Refused()),
                new Probe("client", NodeIp, 30010, Refused()))]),

        new("nodeport-reaches-every-endpoint",
            Service("web", Vip, type: "NodePort", nodePort: 30011) + Slice("web", AllPods.Select(p => new Ep(p)).ToArray()),
            [Probes(new Probe("client", NodeIp, 30011, Spread(AllPods)))]),

        new("nodeport-addresses-primary-answers-only-on-the-primary-ip",
            // The node holds 203.0.113.1 (its Node's InternalIP) and 192.0.2.1 (toward node-b), both
            // reachable from the client (its default route goes through the node). With
            // --nodeport-addresses=primary only the primary IP accepts the node port; the other address
            // refuses it as any closed port (no proxy rule, the node's own TCP stack answers).
            Node() + Service("web", Vip, type: "NodePort", nodePort: 30017) + Slice("web", new Ep("local-0"), new Ep("remote-0")),
            [Probes(
                new Probe("client", NodeIp, 30017, Spread("local-0", "remote-0")),
                new Probe("client", InterNodeAddress, 30017, Refused())),
             // The Node's primary IP moves to the other address: the node port follows it.
             After(Node(internalIP: InterNodeAddress) + Service("web", Vip, type: "NodePort", nodePort: 30017) + Slice("web", new Ep("local-0")),
                new Probe("client", InterNodeAddress, 30017, Spread("local-0")),
                new Probe("client", NodeIp, 30017, Refused()))],
            ["--nodeport-addresses=primary"]),

        new("off-cluster-sources-are-masqueraded-pod-to-pod-is-not",
            Service("web", Vip) + Slice("web", new Ep("remote-0")),
            [Probes(
                // The client's traffic is masqueraded to the node's address toward node-b.
                new Probe("client", Vip, 80, SpreadSeenFrom(InterNodeAddress, "remote-0")),
                // Pod to pod keeps its source. (Only pods of this node probe VIPs: node-b runs no
                // proxy, and a node-b pod's reply would bypass this node's un-DNAT.)
                new Probe("local-0", Vip, 80, SpreadSeenFrom(Pods["local-0"].IPv4, "remote-0")))]),

        new("masquerade-source-as-seen-by-a-local-pod",
            Service("web", Vip) + Slice("web", new Ep("local-1")),
            [Probes(
                new Probe("client", Vip, 80, SpreadSeenFrom(LocalPodGateway, "local-1")),
                new Probe("local-0", Vip, 80, SpreadSeenFrom(Pods["local-0"].IPv4, "local-1")))]),

        new("hairpin-pod-reaches-itself-through-its-service",
            Service("web", Vip) + Slice("web", new Ep("local-0")),
            [Probes(new Probe("local-0", Vip, 80, SpreadSeenFrom(LocalPodGateway, "local-0")))]),

        new("masquerade-all-masquerades-pod-traffic",
            Service("web", Vip) + Slice("web", new Ep("local-1")),
            [Probes(new Probe("local-0", Vip, 80, SpreadSeenFrom(LocalPodGateway, "local-1")))],
            ["--masquerade-all"]),

        new("detect-local-by-interface-name-prefix",
            Service("web", Vip) + Slice("web", new Ep("local-1")),
            [Probes(
                new Probe("local-0", Vip, 80, SpreadSeenFrom(Pods["local-0"].IPv4, "local-1")),
                new Probe("client", Vip, 80, SpreadSeenFrom(LocalPodGateway, "local-1")))],
            ["--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=vpod"]),

        new("detect-local-by-node-cidr",
            // Only this node's pod CIDR (from the Node object) counts as local: node-b's pods are not.
            Node() + Service("web", Vip) + Slice("web", new Ep("local-1")),
            [Probes(
                new Probe("local-0", Vip, 80, SpreadSeenFrom(Pods["local-0"].IPv4, "local-1")),
                new Probe("client", Vip, 80, SpreadSeenFrom(LocalPodGateway, "local-1")))],
            ["--detect-local-mode=NodeCIDR"]),

        new("external-ips-reach-endpoints",
            Service("web", Vip, spec: "externalIPs: [\"198.51.100.10\"]") + Slice("web", new Ep("local-0"), new Ep("remote-0")),
            [Probes(new Probe("client", "198.51.100.10", 80, Spread("local-0", "remote-0")))]),

        new("load-balancer-source-ranges-allow-and-drop",
            Node() + Service("web", Vip, type: "LoadBalancer", nodePort: 30012, spec: $"loadBalancerSourceRanges: [\"{ClientIp}/32\"]",
                status: "loadBalancer: { ingress: [ { ip: 198.51.100.20 } ] }") + Slice("web", new Ep("local-0"), new Ep("remote-0")),
            [Probes(
                new Probe("client", "198.51.100.20", 80, Spread("local-0", "remote-0")),
                new Probe("client2", "198.51.100.20", 80, NoAnswer()),
                // The node and a pod are sources like any other: no range holds them.
                new Probe("node", "198.51.100.20", 80, NoAnswer()),
                new Probe("local-1", "198.51.100.20", 80, NoAnswer())),
             // A range holding the node's IP lets the node in (kube-proxy: the node's request leaves from a node address).
             After(Node() + Service("web", Vip, type: "LoadBalancer", nodePort: 30012, spec: $"loadBalancerSourceRanges: [\"{ClientIp}/32\", \"{NodeIp}/32\"]",
                    status: "loadBalancer: { ingress: [ { ip: 198.51.100.20 } ] }") + Slice("web", new Ep("local-0"), new Ep("remote-0")),
                new Probe("node", "198.51.100.20", 80, Spread("local-0", "remote-0")),
                new Probe("client2", "198.51.100.20", 80, NoAnswer()))]),

        new("session-affinity-keeps-a-client-on-one-endpoint",
            Service("web", Vip, spec: "sessionAffinity: ClientIP\nsessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } }") +
                Slice("web", AllPods.Select(p => new Ep(p)).ToArray()),
            [Probes(new Probe("client", Vip, 80, Sticky(AllPods)), new Probe("local-0", Vip, 80, Sticky(AllPods)))]),

        new("external-policy-local-keeps-source-and-uses-local-endpoints",
            Service("web", Vip, type: "NodePort", nodePort: 30013, spec: "externalTrafficPolicy: Local\nhealthCheckNodePort: 32013") +
                Slice("web", AllPods.Select(p => new Ep(p)).ToArray()),
            [Probes(
                new Probe("client", NodeIp, 30013, SpreadSeenFrom(ClientIp, LocalPods)),
                // Cluster IP traffic is not external: every endpoint serves it.
                new Probe("client", Vip, 80, Spread(AllPods)),
                new Probe("client", NodeIp, 32013, Http(200, "\"localEndpoints\": 2")))]),

        new("external-policy-local-without-local-endpoints-drops-external-traffic",
            Service("web", Vip, type: "NodePort", nodePort: 30014, spec: "externalTrafficPolicy: Local\nhealthCheckNodePort: 32014") +
                Slice("web", new Ep("remote-0"), new Ep("remote-1")),
            [Probes(
                new Probe("client", NodeIp, 30014, NoAnswer()),
                new Probe("client", Vip, 80, Spread(RemotePods)),
                // Pods reaching the node port are short-circuited to the cluster endpoints.
                new Probe("local-0", NodeIp, 30014, Spread(RemotePods)),
                new Probe("client", NodeIp, 32014, Http(503, "\"localEndpoints\": 0"))) with
             {
                 Metrics = [new("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "ip_family=\"IPv4\",traffic_policy=\"external\"", 1)],
             }]),

        new("internal-policy-local-uses-local-endpoints-only",
            Service("web", Vip, spec: "internalTrafficPolicy: Local") + Slice("web", AllPods.Select(p => new Ep(p)).ToArray()) +
            Service("far", "10.96.1.11", spec: "internalTrafficPolicy: Local") + Slice("far", new Ep("remote-0")),
            [Probes(
                new Probe("local-0", Vip, 80, Spread(LocalPods)),
                new Probe("local-0", "10.96.1.11", 80, NoAnswer())) with
             {
                 Metrics = [new("kubeproxy_sync_proxy_rules_no_local_endpoints_total", "ip_family=\"IPv4\",traffic_policy=\"internal\"", 1)],
             }]),

        new("terminating-endpoints-serve-when-none-is-ready",
            Service("web", Vip) + Slice("web",
                new Ep("local-0", Ready: false, Serving: true, Terminating: true),
                new Ep("local-1", Ready: false, Serving: false, Terminating: true),
                new Ep("remote-0", Ready: false, Serving: false, Terminating: false)),
            [Probes(new Probe("client", Vip, 80, Spread("local-0")))]),

        new("topology-hints-keep-traffic-in-zone",
            Node(zone: "zone-a") + Service("web", Vip, spec: "trafficDistribution: PreferClose") + Slice("web",
                new Ep("local-0", Zone: "zone-a", Hint: "zone-a"), new Ep("remote-0", Zone: "zone-b", Hint: "zone-b")),
            [Probes(new Probe("client", Vip, 80, Spread("local-0"))),
             // Safety fallback: an endpoint without hints means hints are ignored.
             After(Node(zone: "zone-a") + Service("web", Vip, spec: "trafficDistribution: PreferClose") + Slice("web",
                new Ep("local-0", Zone: "zone-a", Hint: "zone-a"), new Ep("remote-0", Zone: "zone-b")),
                new Probe("client", Vip, 80, Spread("local-0", "remote-0")))]),

        new("prefer-same-node-keeps-traffic-on-node-then-falls-back-to-zone-and-cluster",
            // As the slice controller writes PreferSameNode: each endpoint hinted for its own node and zone.
            // Both endpoints are in this node's zone, so only the node hints keep remote-0 out.
            Node(zone: "zone-a") + Service("web", Vip, spec: "trafficDistribution: PreferSameNode") + Slice("web",
                new Ep("local-0", Zone: "zone-a", Hint: "zone-a", NodeHint: NodeName),
                new Ep("remote-0", Zone: "zone-a", Hint: "zone-a", NodeHint: RemoteNodeName)),
            [Probes(
                new Probe("client", Vip, 80, Spread("local-0")),
                new Probe("node", Vip, 80, Spread("local-0"))),
             // An endpoint without a node hint: the node hints are ignored, the zone hints used.
             After(Node(zone: "zone-a") + Service("web", Vip, spec: "trafficDistribution: PreferSameNode") + Slice("web",
                new Ep("local-0", Zone: "zone-a", Hint: "zone-a", NodeHint: NodeName),
                new Ep("remote-0", Zone: "zone-a", Hint: "zone-a"),
                new Ep("remote-1", Zone: "zone-b", Hint: "zone-b", NodeHint: RemoteNodeName)),
                new Probe("client", Vip, 80, Spread("local-0", "remote-0"))),
             // An endpoint without any hint: hints are ignored, every endpoint serves.
             After(Node(zone: "zone-a") + Service("web", Vip, spec: "trafficDistribution: PreferSameNode") + Slice("web",
                new Ep("local-0", Zone: "zone-a", Hint: "zone-a", NodeHint: NodeName),
                new Ep("remote-0", Zone: "zone-a"),
                new Ep("remote-1", Zone: "zone-b", Hint: "zone-b", NodeHint: RemoteNodeName)),
                new Probe("client", Vip, 80, Spread("local-0", "remote-0", "remote-1")))]),

        new("udp-service-reaches-endpoints",
            Service("dns", Vip, port: 53, protocol: "UDP", type: "NodePort", nodePort: 30015) + Slice("dns", 8080, "UDP", "IPv4", new Ep("local-0"), new Ep("remote-0")),
            [Probes(
                new Probe("client", Vip, 53, Spread("local-0", "remote-0"), Transport.Udp),
                new Probe("client", NodeIp, 30015, Spread("local-0", "remote-0"), Transport.Udp))]),

        new("udp-stale-flows-are-cleared-when-an-endpoint-goes",
            Service("dns", Vip, port: 53, protocol: "UDP") + Slice("dns", 8080, "UDP", "IPv4", new Ep("local-0")),
            [Probes(new Probe("client", Vip, 53, Spread("local-0"), Transport.Udp, SourcePort: 40053)),
             // The same client socket keeps its conntrack entry unless the proxy deletes it.
             After(Service("dns", Vip, port: 53, protocol: "UDP") + Slice("dns", 8080, "UDP", "IPv4", new Ep("local-1")),
                new Probe("client", Vip, 53, Spread("local-1"), Transport.Udp, SourcePort: 40053)) with
             {
                 // The cleanup is kube-proxy's conntrack reconciler: it ran, and where netfilter NATed the flow
                 // (iptables, nftables) the client's flow to local-0 was one of the deleted entries. IPVS keeps
                 // the flow in its own connection table (its entry expires with the gone destination), so
                 // conntrack -D finds nothing there: measured in the VM lane, deleted = 0 while the probe passes.
                 Metrics =
                 [
                     new("kubeproxy_conntrack_reconciler_deleted_entries_total", "ip_family=\"IPv4\"", 1, ["iptables", "nftables"]),
                     new("kubeproxy_conntrack_reconciler_sync_duration_seconds_count", "ip_family=\"IPv4\"", 1),
                 ],
             }]),

        new("services-of-other-proxies-headless-and-external-name-are-ignored",
            Service("other", Vip, labels: "service.kubernetes.io/service-proxy-name: someone-else") + Slice("other", new Ep("local-0")) +
            Service("headless", "None") + Slice("headless", new Ep("local-0")) +
            "apiVersion: v1\nkind: Service\nmetadata: { name: alias, namespace: conformance }\nspec: { type: ExternalName, externalName: db.example.invalid }\n---\n" +
            // Positive control: a service of ours in the same manifests is proxied, so "no answer" means ignored, not "nothing programmed".
            Service("ours", "10.96.1.12") + Slice("ours", new Ep("local-1")),
            [Probes(
                new Probe("client", "10.96.1.12", 80, Spread("local-1")),
                new Probe("client", Vip, 80, NoAnswer()))]),

        new("ipv6-service-reaches-ipv6-endpoints",
            Service("web", Vip, clusterIPv6: "fd00:10:96::10", type: "NodePort", nodePort: 30016) +
                Slice("web", new Ep("local-0"), new Ep("remote-0")) +
                Slice("web", 8080, "TCP", "IPv6", new Ep("local-1"), new Ep("remote-1")),
            [Probes(
                new Probe("client", "fd00:10:96::10", 80, Spread("local-1", "remote-1")),
                new Probe("client", Vip, 80, Spread("local-0", "remote-0")),
                new Probe("client", "2001:db8::1", 30016, Spread("local-1", "remote-1")))]),

        new("load-balancer-source-ranges-ipv6-allow-and-drop",
            // The IPv6 twin of the row above: a dual-stack load balancer whose ranges admit the client's IPv6 address.
            Node() + Service("web", Vip, clusterIPv6: "fd00:10:96::10", type: "LoadBalancer", nodePort: 30017,
                spec: "loadBalancerSourceRanges: [\"2001:db8::10/128\"]",
                status: "loadBalancer: { ingress: [ { ip: 2001:db8:ff::21 } ] }") +
                Slice("web", new Ep("local-0"), new Ep("remote-0")) +
                Slice("web", 8080, "TCP", "IPv6", new Ep("local-1"), new Ep("remote-1")),
            [Probes(
                new Probe("client", "2001:db8:ff::21", 80, Spread("local-1", "remote-1")),
                new Probe("client2", "2001:db8:ff::21", 80, NoAnswer()),
                new Probe("node", "2001:db8:ff::21", 80, NoAnswer()))]),

        new("endpoint-removed-stops-receiving-traffic",
            Service("web", Vip) + Slice("web", new Ep("local-0"), new Ep("local-1")),
            [Probes(new Probe("client", Vip, 80, Spread("local-0", "local-1"))),
             After(Service("web", Vip) + Slice("web", new Ep("local-1")), new Probe("client", Vip, 80, Spread("local-1")))]),
    ];
}
