using System.Text.Json;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Manifests;

namespace ProxyPlanes.Core.Tests.Sources;

public class ManifestParserTests
{
    [Fact]
    public void ParseFile_KubectlServices_ReadsPortsAndTargetPortNames()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("services.yaml"));

        Assert.Equal(["web", "api", "kube-dns"], set.Services.Select(s => s.Metadata!.Name));
        var web = set.Services[0];
        Assert.Equal("v1", web.ApiVersion);
        Assert.Equal("Service", web.Kind);
        Assert.Equal("shop", web.Metadata!.Namespace);
        Assert.Equal("48213", web.Metadata.ResourceVersion);
        Assert.Equal("web", web.Metadata.Labels!["app"]);
        Assert.Null(web.Metadata.Annotations); // kubectl's last-applied configuration is not kept (the proxy reads no such annotation)
        Assert.Equal("ClusterIP", web.Spec!.Type);
        Assert.Equal("10.96.120.15", web.Spec.ClusterIP);
        Assert.Equal(["10.96.120.15"], web.Spec.ClusterIPs!);
        Assert.Equal(["IPv4"], web.Spec.IpFamilies!);
        Assert.Equal("SingleStack", web.Spec.IpFamilyPolicy);
        Assert.Equal("Cluster", web.Spec.InternalTrafficPolicy);
        var ports = web.Spec.Ports!;
        Assert.Equal(["http", "https", "metrics"], ports.Select(p => p.Name));
        Assert.Equal([80, 443, 9090], ports.Select(p => p.Port));
        Assert.All(ports, p => Assert.Equal("TCP", p.Protocol));
        Assert.Equal(IntOrString.FromName("http"), ports[0].TargetPort);
        Assert.Equal(IntOrString.FromInt(8443), ports[1].TargetPort);
        Assert.Equal("http", ports[2].AppProtocol);

        var api = set.Services[1];
        Assert.Equal("NodePort", api.Spec!.Type);
        Assert.Equal(30080, api.Spec.Ports![0].NodePort);
        Assert.Equal("Local", api.Spec.ExternalTrafficPolicy);
        Assert.Equal(31555, api.Spec.HealthCheckNodePort);
        Assert.Equal("ClientIP", api.Spec.SessionAffinity);
        Assert.Equal(10800, api.Spec.SessionAffinityConfig!.ClientIP!.TimeoutSeconds);

        var dns = set.Services[2];
        Assert.Equal("kube-system", dns.Metadata!.Namespace);
        Assert.Equal([("dns", "UDP", 53), ("dns-tcp", "TCP", 53), ("metrics", "TCP", 9153)],
            dns.Spec!.Ports!.Select(p => (p.Name, p.Protocol, p.Port)));
        Assert.Null(dns.Metadata.Annotations);
        Assert.Empty(set.EndpointSlices);
        Assert.Empty(set.Nodes);
        Assert.Empty(set.Ignored);
    }

    [Fact]
    public void ParseFile_KubectlEndpointSlices_ReadsEndpointsConditionsHintsAndPorts()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("endpointslices.yaml"));

        Assert.Equal(["web-8xk2p", "api-2jd7f", "kube-dns-6xhzr"], set.EndpointSlices.Select(s => s.Metadata!.Name));
        var web = set.EndpointSlices[0];
        Assert.Equal("discovery.k8s.io/v1", web.ApiVersion);
        Assert.Equal("IPv4", web.AddressType);
        Assert.Equal("web", web.Metadata!.Labels![WellKnownLabels.ServiceName]);
        var endpoints = web.Endpoints!;
        Assert.Equal(3, endpoints.Count);
        Assert.Equal(["10.244.1.17"], endpoints[0].Addresses!);
        Assert.Equal("node-a", endpoints[0].NodeName);
        Assert.Equal("europe-west1-b", endpoints[0].Zone);
        Assert.Equal("europe-west1-b", Assert.Single(endpoints[0].Hints!.ForZones!).Name);
        Assert.True(endpoints[0].Conditions!.Value.Ready);
        Assert.False(endpoints[0].Conditions!.Value.Terminating);
        Assert.Equal((false, true, true), (endpoints[2].Conditions!.Value.Ready, endpoints[2].Conditions!.Value.Serving, endpoints[2].Conditions!.Value.Terminating));
        Assert.Null(endpoints[2].Hints);
        Assert.Equal([("http", 8080), ("https", 8443), ("metrics", 9090)], web.Ports!.Select(p => (p.Name, p.Port)));
        Assert.Equal("http", web.Ports![2].AppProtocol);
        Assert.Equal(["UDP"], set.EndpointSlices[2].Ports!.Where(p => p.Name == "dns").Select(p => p.Protocol));
    }

    [Fact]
    public void ParseFile_NodeList_ReadsAddressesAndPodCidrs()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("nodes.yaml"));

        Assert.Equal(["node-a", "node-b", "node-c"], set.Nodes.Select(n => n.Metadata!.Name));
        var a = set.Nodes[0];
        Assert.Null(a.Metadata!.Namespace);
        Assert.Equal("10.244.1.0/24", a.Spec!.PodCIDR);
        Assert.Equal(["10.244.1.0/24", "fd00:10:244:1::/64"], a.Spec.PodCIDRs!);
        Assert.Equal([("InternalIP", "10.132.0.2"), ("InternalIP", "fd00:10:132::2"), ("Hostname", "node-a")],
            a.Status!.Addresses!.Select(x => (x.Type!, x.Address!)));
        Assert.Equal("", a.Metadata.Labels!["node-role.kubernetes.io/control-plane"]);
        Assert.Equal("europe-west1-b", a.Metadata.Labels["topology.kubernetes.io/zone"]);
        Assert.Equal("ExternalIP", set.Nodes[1].Status!.Addresses![1].Type);
    }

    [Fact]
    public void ParseFile_ListOfMixedKinds_ReadsEachItemInOrder()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("cart.yaml"));

        Assert.Equal(["Service shop/cart", "EndpointSlice shop/cart-7tq9d"], set.Objects.Select(o => o.Key.ToString()));
        Assert.Equal([4, 25], set.Objects.Select(o => o.Line));
        Assert.Equal("PreferClose", set.Services[0].Spec!.TrafficDistribution);
        Assert.Equal("Local", set.Services[0].Spec!.InternalTrafficPolicy);
        Assert.Equal(IntOrString.FromInt(8080), set.Services[0].Spec!.Ports![0].TargetPort);
        Assert.Equal("node-b", set.EndpointSlices[0].Endpoints![0].NodeName);
    }

    [Fact]
    public void ParseFile_JsonService_ReadsLoadBalancerFields()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("ingress.json"));

        var svc = Assert.Single(set.Services);
        Assert.Equal("ingress-nginx/ingress-nginx-controller", $"{svc.Metadata!.Namespace}/{svc.Metadata.Name}");
        Assert.Equal("LoadBalancer", svc.Spec!.Type);
        Assert.Equal(["203.0.113.0/24"], svc.Spec.LoadBalancerSourceRanges!);
        Assert.Equal([(80, 31080, "http"), (443, 31443, "https")],
            svc.Spec.Ports!.Select(p => (p.Port, p.NodePort ?? 0, p.TargetPort!.Value.Name!)));
        var ingress = Assert.Single(svc.Status!.LoadBalancer!.Ingress!);
        Assert.Equal(("198.51.100.7", "VIP"), (ingress.Ip, ingress.IpMode));
    }

    [Fact]
    public void ParseFile_TypedJsonList_DefaultsItemKindAndApiVersion()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("ingress-endpointslices.json"));

        var slice = Assert.Single(set.EndpointSlices);
        Assert.Equal(("EndpointSlice", "discovery.k8s.io/v1"), (slice.Kind, slice.ApiVersion));
        Assert.Equal("ingress-nginx-controller-q2w3e", slice.Metadata!.Name);
        Assert.Equal(8, set.Objects[0].Line);
        Assert.Equal([443, 80], slice.Ports!.Select(p => p.Port ?? 0));
    }

    [Fact]
    public void ParseFile_OtherKinds_AreReturnedAsIgnored()
    {
        var set = ManifestParser.ParseFile(TestData.Manifest("workloads.yaml"));

        Assert.Equal(0, set.Count);
        Assert.Equal([("Namespace", null, "shop", 2), ("Deployment", "shop", "web", 7), ("ConfigMap", "shop", "web-config", 35)],
            set.Ignored.Select(i => (i.Kind, i.Namespace, i.Name, i.Line)));
        Assert.Equal("apps/v1", set.Ignored[1].ApiVersion);
    }

    [Fact]
    public void Load_TestdataFolder_ReadsEveryFileInPathOrder()
    {
        var set = ManifestParser.Load(TestData.ManifestsDirectory);

        Assert.Equal(5, set.Services.Count);
        Assert.Equal(5, set.EndpointSlices.Count);
        Assert.Equal(3, set.Nodes.Count);
        Assert.Equal(3, set.Ignored.Count);
        Assert.Equal(
            ["cart.yaml", "endpointslices.yaml", "ingress-endpointslices.json", "ingress.json", "nodes.yaml", "services.yaml"],
            set.Objects.Select(o => Path.GetFileName(o.File)).Distinct());
        // Every slice belongs to a Service of the set.
        var services = set.Services.Select(s => (s.Metadata!.Namespace, s.Metadata.Name)).ToHashSet();
        Assert.All(set.EndpointSlices, e => Assert.Contains((e.Metadata!.Namespace, e.Metadata.Labels![WellKnownLabels.ServiceName]), services));
    }

    [Fact]
    public void Parse_MultiDocument_SkipsEmptyDocumentsAndKeepsOrder()
    {
        var text = "---\n# nothing here\n---\n" + Manifests.Node("n1") + "---\n---\n" + Manifests.Service("web") + "...\n---\n"
            + Manifests.Slice("web-1", "web", "10.0.0.1") + "---\n";

        var set = ManifestParser.Parse(text, "multi.yaml");

        Assert.Equal(["Node n1", "Service shop/web", "EndpointSlice shop/web-1"], set.Objects.Select(o => o.Key.ToString()));
        Assert.Equal([4, 16, 30], set.Objects.Select(o => o.Line));
        Assert.All(set.Objects, o => Assert.Equal("multi.yaml", o.File));
    }

    [Fact]
    public void Parse_PreferSameNodeSlice_ReadsNodeAndZoneHints()
    {
        var set = ManifestParser.Parse("""
            apiVersion: v1
            kind: Service
            metadata: { name: web }
            spec: { clusterIP: 10.96.0.10, trafficDistribution: PreferSameNode }
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: { name: web-1, labels: { kubernetes.io/service-name: web } }
            addressType: IPv4
            endpoints:
            - addresses: ["10.244.1.2"]
              nodeName: node-a
              hints:
                forNodes:
                - name: node-a
                forZones:
                - name: zone-a
            """, "same-node.yaml");

        Assert.Equal("PreferSameNode", set.Services[0].Spec!.TrafficDistribution);
        var hints = set.EndpointSlices[0].Endpoints![0].Hints!;
        Assert.Equal("node-a", Assert.Single(hints.ForNodes!).Name);
        Assert.Equal("zone-a", Assert.Single(hints.ForZones!).Name);
    }

    [Fact]
    public void Parse_MissingNamespace_DefaultsToDefault()
    {
        var set = ManifestParser.Parse("""
            apiVersion: v1
            kind: Service
            metadata:
              name: web
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-1
              labels: {kubernetes.io/service-name: web}
            """, "ns.yaml");

        Assert.Equal("default", set.Services[0].Metadata!.Namespace);
        Assert.Equal("default", set.EndpointSlices[0].Metadata!.Namespace);
        Assert.Equal(["Service default/web", "EndpointSlice default/web-1"], set.Objects.Select(o => o.Key.ToString()));
    }

    [Fact]
    public void Parse_YamlScalars_FollowKubernetesYamlRules()
    {
        var set = ManifestParser.Parse("""
            apiVersion: v1
            kind: Service
            metadata:
              name: scalars
              labels:
                quoted-bool: "true"
                quoted-int: '42'
                empty-quoted: ""
                block: |
                  line one
                  line two
                folded: >-
                  a
                  b
                tagged: !!str 123
            spec:
              clusterIP: ~
              type:
              externalName: null
              healthCheckNodePort: 0x7A69
              ports:
              - name: '80'
                port: +80
                targetPort: "8080"
                nodePort: 030080
              - port: 443
                targetPort: https
            """, "scalars.yaml");

        var svc = Assert.Single(set.Services);
        var labels = svc.Metadata!.Labels!;
        Assert.Equal("true", labels["quoted-bool"]);
        Assert.Equal("42", labels["quoted-int"]);
        Assert.Equal("", labels["empty-quoted"]);
        Assert.Equal("line one\nline two\n", labels["block"]);
        Assert.Equal("a b", labels["folded"]);
        Assert.Equal("123", labels["tagged"]);
        Assert.Null(svc.Spec!.ClusterIP);
        Assert.Null(svc.Spec.Type);
        Assert.Null(svc.Spec.ExternalName);
        Assert.Equal(31337, svc.Spec.HealthCheckNodePort);
        Assert.Equal("80", svc.Spec.Ports![0].Name);
        Assert.Equal(80, svc.Spec.Ports[0].Port);
        Assert.Equal(IntOrString.FromInt(8080), svc.Spec.Ports[0].TargetPort); // "8080" is the number, as in Kubernetes
        Assert.Equal(30080, svc.Spec.Ports[0].NodePort);
        Assert.Equal(IntOrString.FromName("https"), svc.Spec.Ports[1].TargetPort);
    }

    [Fact]
    public void Parse_AnchorsAliasesAndMergeKeys_AreExpanded()
    {
        var set = ManifestParser.Parse("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-1
              labels: &labels
                kubernetes.io/service-name: web
                endpoints.kubernetes.io/last-change-trigger-time: "2026-12-07T00:00:00Z"
              annotations: *labels
            addressType: IPv4
            endpoints:
            - &ready
              addresses: [10.0.0.1]
              conditions: {ready: true, serving: true}
              zone: a
            - <<: *ready
              addresses: [10.0.0.2]
            ports:
            - {name: http, port: 8080}
            """, "anchors.yaml");

        var slice = Assert.Single(set.EndpointSlices);
        Assert.Equal("2026-12-07T00:00:00Z", slice.Metadata!.Annotations![WellKnownLabels.LastChangeTriggerTime]);
        Assert.Equal("web", slice.Metadata.Labels![WellKnownLabels.ServiceName]);
        Assert.Equal(["10.0.0.1", "10.0.0.2"], slice.Endpoints!.Select(e => e.Addresses!.Single()));
        Assert.All(slice.Endpoints!, e => Assert.Equal(("a", true), (e.Zone, e.Conditions!.Value.Ready)));
    }

    [Fact]
    public void Parse_SameObjectAsYamlAndJson_ProducesIdenticalModel()
    {
        var fromJson = ManifestParser.ParseFile(TestData.Manifest("ingress.json")).Services[0];
        var json = JsonSerializer.Serialize(fromJson, KubernetesJsonContext.Default.Service);
        var fromYaml = ManifestParser.Parse("""
            apiVersion: v1
            kind: Service
            metadata:
              labels:
                app.kubernetes.io/component: controller
                app.kubernetes.io/name: ingress-nginx
              name: ingress-nginx-controller
              namespace: ingress-nginx
              resourceVersion: "51020"
              uid: 4c3b2a19-0f8e-4d7c-b6a5-948372615f0e
            spec:
              clusterIP: 10.96.200.40
              clusterIPs: [10.96.200.40]
              externalTrafficPolicy: Cluster
              internalTrafficPolicy: Cluster
              ipFamilies: [IPv4]
              ipFamilyPolicy: SingleStack
              loadBalancerSourceRanges: [203.0.113.0/24]
              ports:
              - {appProtocol: http, name: http, nodePort: 31080, port: 80, protocol: TCP, targetPort: http}
              - {appProtocol: https, name: https, nodePort: 31443, port: 443, protocol: TCP, targetPort: https}
              sessionAffinity: None
              type: LoadBalancer
            status:
              loadBalancer:
                ingress:
                - ip: 198.51.100.7
                  ipMode: VIP
            """, "ingress.yaml").Services[0];

        Assert.Equal(json, JsonSerializer.Serialize(fromYaml, KubernetesJsonContext.Default.Service));
    }

    [Fact]
    public void Parse_JsonWithSeveralValues_ReadsEach()
    {
        var set = ManifestParser.Parse("""
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}
            """, "nodes.json");

        Assert.Equal(["n1", "n2"], set.Nodes.Select(n => n.Metadata!.Name));
        Assert.Equal([1, 2], set.Objects.Select(o => o.Line));
    }

    [Fact]
    public void FindManifestFiles_Folder_SkipsHiddenEditorFilesAndOtherExtensions()
    {
        using var dir = new TempDirectory();
        dir.Write("b.yaml", "");
        dir.Write("a.yml", "");
        dir.Write("c.json", "");
        dir.Write("sub/d.yaml", "");
        dir.Write("notes.txt", "");
        dir.Write(".#b.yaml", "");
        dir.Write("b.yaml~", "");
        dir.Write(".b.yaml.swp", "");
        dir.Write("#b.yaml#", "");
        dir.Write(".hidden/e.yaml", "");
        dir.Write("..data/f.yaml", "");

        var files = ManifestParser.FindManifestFiles(dir.Path).Select(f => Path.GetRelativePath(dir.Path, f));

        Assert.Equal(["a.yml", "b.yaml", "c.json", Path.Combine("sub", "d.yaml")], files);
    }

    [Fact]
    public void FindManifestFiles_MissingPath_ThrowsNamingThePath()
    {
        var path = Path.Combine(Path.GetTempPath(), "no-such-manifests-" + Guid.NewGuid().ToString("N"));

        var e = Assert.Throws<ManifestException>(() => ManifestParser.FindManifestFiles(path));

        Assert.Equal(path, e.File);
        Assert.Equal(0, e.Line);
        Assert.Equal($"{path}: manifest path does not exist", e.Message);
    }
}
