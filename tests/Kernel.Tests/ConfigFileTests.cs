using System.CommandLine;
using System.Net;
using ProxyPlanes.Config;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.Sandboxed;
using YamlDotNet.RepresentationModel;
using static ProxyPlanes.Kernel.Tests.ProxyCli;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Shared by the config tests: sample files and binding flags the way `proxyplanes run` does.</summary>
internal static class ConfigSamples
{
    public const string Header = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    /// <summary>
    /// A kube-proxy ConfigMap as `kubectl -n kube-system get cm kube-proxy -o yaml` prints it on a
    /// kubeadm cluster (every v1alpha1 field written out), with an operator's edits.
    /// </summary>
    public const string KubeadmConfigMap = """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: kube-proxy
          namespace: kube-system
          labels:
            app: kube-proxy
          annotations:
            kubeadm.kubernetes.io/component-config.hash: sha256:0b7c4e4e
        data:
          config.conf: |-
            apiVersion: kubeproxy.config.k8s.io/v1alpha1
            bindAddress: 0.0.0.0
            bindAddressHardFail: false
            clientConnection:
              acceptContentTypes: ""
              burst: 0
              contentType: ""
              kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
              qps: 5
            clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
            configSyncPeriod: 0s
            conntrack:
              maxPerCore: 0
              min: 131072
              tcpBeLiberal: false
              tcpCloseWaitTimeout: 1h0m0s
              tcpEstablishedTimeout: 12h0m0s
              udpStreamTimeout: 2m0s
              udpTimeout: 30s
            detectLocal:
              bridgeInterface: ""
              interfaceNamePrefix: veth
            detectLocalMode: InterfaceNamePrefix
            enableProfiling: false
            healthzBindAddress: 0.0.0.0
            hostnameOverride: Worker-1
            iptables:
              localhostNodePorts: null
              masqueradeAll: true
              masqueradeBit: null
              minSyncPeriod: 2s
              syncPeriod: 1m0s
            ipvs:
              excludeCIDRs: null
              minSyncPeriod: 0s
              scheduler: lc
              strictARP: false
              syncPeriod: 0s
              tcpFinTimeout: 0s
              tcpTimeout: 0s
              udpTimeout: 0s
            kind: KubeProxyConfiguration
            logging:
              flushFrequency: 0
              options:
                json:
                  infoBufferSize: "0"
                text:
                  infoBufferSize: "0"
              verbosity: 0
            metricsBindAddress: 0.0.0.0:10249
            mode: iptables
            nftables:
              masqueradeAll: false
              masqueradeBit: null
              minSyncPeriod: 0s
              syncPeriod: 0s
            nodePortAddresses:
            - 192.168.0.0/16
            - fd00::/8
            oomScoreAdj: null
            portRange: ""
            showHiddenMetricsForVersion: ""
            winkernel:
              enableDSR: false
              forwardHealthCheckVip: false
              networkName: ""
              rootHnsEndpointName: ""
              sourceVip: ""
          kubeconfig.conf: |-
            apiVersion: v1
            kind: Config
            clusters:
            - cluster:
                certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
                server: https://10.0.0.1:6443
              name: default
        """;

    /// <summary>kubeadm's untouched config.conf: every field at "use the default".</summary>
    public const string KubeadmDefaults = """
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        bindAddress: 0.0.0.0
        bindAddressHardFail: false
        clientConnection:
          acceptContentTypes: ""
          burst: 0
          contentType: ""
          kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
          qps: 0
        clusterCIDR: ""
        configSyncPeriod: 0s
        conntrack:
          maxPerCore: null
          min: null
          tcpBeLiberal: false
          tcpCloseWaitTimeout: null
          tcpEstablishedTimeout: null
          udpStreamTimeout: 0s
          udpTimeout: 0s
        detectLocal:
          bridgeInterface: ""
          interfaceNamePrefix: ""
        detectLocalMode: ""
        enableProfiling: false
        healthzBindAddress: ""
        hostnameOverride: ""
        iptables:
          localhostNodePorts: null
          masqueradeAll: false
          masqueradeBit: null
          minSyncPeriod: 0s
          syncPeriod: 0s
        ipvs:
          excludeCIDRs: null
          minSyncPeriod: 0s
          scheduler: ""
          strictARP: false
          syncPeriod: 0s
          tcpFinTimeout: 0s
          tcpTimeout: 0s
          udpTimeout: 0s
        kind: KubeProxyConfiguration
        logging:
          flushFrequency: 0
          options:
            json:
              infoBufferSize: "0"
            text:
              infoBufferSize: "0"
          verbosity: 0
        metricsBindAddress: ""
        mode: ""
        nftables:
          masqueradeAll: false
          masqueradeBit: null
          minSyncPeriod: 0s
          syncPeriod: 0s
        nodePortAddresses: null
        oomScoreAdj: null
        portRange: ""
        showHiddenMetricsForVersion: ""
        winkernel:
          enableDSR: false
          forwardHealthCheckVip: false
          networkName: ""
          rootHnsEndpointName: ""
          sourceVip: ""
        """;

    /// <summary>The value of <paramref name="key"/> in a ConfigMap manifest's data.</summary>
    public static string ConfigMapData(string manifest, string key)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(manifest));
        var root = (YamlMappingNode)stream.Documents[0].RootNode;
        var data = (YamlMappingNode)root.Children[new YamlScalarNode("data")];
        return ((YamlScalarNode)data.Children[new YamlScalarNode(key)]).Value!;
    }

    /// <summary>Parses <paramref name="args"/> as `proxyplanes run` does and binds them.</summary>
    public static RunSettings Bind(params string[] args)
    {
        var flags = new ProxyFlags();
        var run = new Command("run");
        flags.AddTo(run);
        var result = run.Parse(args);
        Assert.Empty(result.Errors);
        return flags.Bind(result);
    }

    /// <summary>Parses <paramref name="args"/> as `proxyplanes cleanup` does and binds what it must leave alone.</summary>
    public static CleanupScope BindCleanup(params string[] args)
    {
        var flags = new ProxyFlags();
        var cleanup = new Command("cleanup");
        flags.AddCleanupTo(cleanup);
        var result = cleanup.Parse(args);
        Assert.Empty(result.Errors);
        return flags.BindCleanup(result);
    }

    /// <summary>Bad config files (after <see cref="Header"/>, so line 3 is the first line given) and the line and message expected.</summary>
    public static TheoryData<string, int, string> BadFiles => new()
    {
        { "iptables:\n  syncPeriod: 30s\n  fooBar: 1\n", 5, "unknown field 'iptables.fooBar'" },
        { "mode: iptables\nfoo:\n  bar: 1\n", 4, "unknown field 'foo'" },
        { "iptables:\n  syncPeriod: abc\n", 4, "iptables.syncPeriod: 'abc' is not a duration such as 500ms, 1s or 1m30s" },
        { "clusterCIDR: 10.244.0.0\n", 3, "clusterCIDR: '10.244.0.0' is not a CIDR such as 10.244.0.0/16" },
        { "ipvs:\n  scheduler: roundrobin\n", 4, "ipvs.scheduler: 'roundrobin' is not an IPVS scheduler; use one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh, fo, ovf, twos" },
    };
}

/// <summary>`--config`: kube-proxy's config file read into <see cref="RunSettings"/>, flags over it (unit level).</summary>
public sealed class ConfigFileTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("proxyplanes-config-");

    public void Dispose() => _folder.Delete(recursive: true);

    private string Write(string text, string name = "config.conf")
    {
        var path = Path.Combine(_folder.FullName, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static IpPrefix Cidr(string text) => IpPrefix.TryParse(text, out var prefix) ? prefix : throw new FormatException(text);

    [Fact]
    public void KubeadmConfigMap_WithEdits_BindsEveryField()
    {
        var path = Write(ConfigSamples.ConfigMapData(ConfigSamples.KubeadmConfigMap, "config.conf"));

        var settings = ConfigSamples.Bind($"--config={path}", "--manifests=/");

        Assert.Equal("iptables", settings.Mode);
        Assert.Equal(path, settings.ConfigFile);
        var proxy = settings.Proxy;
        Assert.Equal("worker-1", proxy.HostName);
        Assert.Equal([Cidr("10.244.0.0/16"), Cidr("fd00:10:244::/56")], proxy.ClusterCidrs);
        Assert.Equal(LocalDetectMode.InterfaceNamePrefix, proxy.DetectLocalMode);
        Assert.Equal("veth", proxy.PodInterface);
        Assert.True(proxy.MasqueradeAll);
        Assert.Equal(NodePortAddressSetting.InCidrs(new EquatableArray<IpPrefix>(new[] { Cidr("192.168.0.0/16"), Cidr("fd00::/8") })), proxy.NodePortAddresses);
        Assert.Equal(TimeSpan.FromMinutes(1), proxy.Sync.SyncPeriod);
        Assert.Equal(TimeSpan.FromSeconds(2), proxy.Sync.MinSyncPeriod);
        Assert.Equal(IPEndPoint.Parse("0.0.0.0:10249"), settings.MetricsBindAddress);
        // A bare IP gets kube-proxy's health port.
        Assert.Equal(IPEndPoint.Parse("0.0.0.0:10256"), settings.HealthzBindAddress);
        Assert.Equal("lc", settings.IpvsScheduler);
        Assert.Equal("/var/lib/kube-proxy/kubeconfig.conf", settings.Kubeconfig);
        Assert.Equal(new ConntrackSettings
        {
            MaxPerCore = 0, // explicit 0: leave nf_conntrack_max alone
            Min = 131072,
            TcpEstablishedTimeout = TimeSpan.FromHours(12),
            TcpCloseWaitTimeout = TimeSpan.FromHours(1),
            UdpTimeout = TimeSpan.FromSeconds(30),
            UdpStreamTimeout = TimeSpan.FromMinutes(2),
        }, settings.Conntrack);
        // Fields kube-proxy has and we do not act on are accepted, and listed when set.
        Assert.Equal(["bindAddress", "clientConnection.qps"], settings.IgnoredConfigFields);
        // Flags not given and not in the file keep their defaults.
        Assert.Equal("auto", settings.IptablesVariant);
        Assert.Equal(2, settings.Verbosity);
    }

    [Fact]
    public void KubeadmDefaults_ChangeNothingButTheKubeconfig()
    {
        var path = Write(ConfigSamples.KubeadmDefaults);

        var withFile = ConfigSamples.Bind($"--config={path}", "--manifests=/");
        var flagsOnly = ConfigSamples.Bind("--manifests=/");

        // "", 0s and null mean "the default", as in kube-proxy; conntrack gets kube-proxy's defaults.
        Assert.Equal(flagsOnly, withFile with { ConfigFile = null, Kubeconfig = null, IgnoredConfigFields = EquatableArray<string>.Empty });
        Assert.Equal(ConntrackSettings.KubeProxyDefaults, withFile.Conntrack);
        Assert.Equal(32768, withFile.Conntrack.MaxPerCore);
        Assert.Equal(TimeSpan.FromHours(24), withFile.Conntrack.TcpEstablishedTimeout);
        Assert.Null(withFile.IpvsScheduler);
        Assert.Equal(["bindAddress"], withFile.IgnoredConfigFields);
    }

    [Fact]
    public void FlagsGivenExplicitly_OverrideTheFile_OthersComeFromIt()
    {
        var path = Write(ConfigSamples.ConfigMapData(ConfigSamples.KubeadmConfigMap, "config.conf"));

        var settings = ConfigSamples.Bind(
            $"--config={path}", "--manifests=/",
            "--sync-period=30s", // the flag's default value, but given: it wins over the file's 1m
            "--masquerade-all=false",
            "--hostname-override=node-b",
            "--cluster-cidr=10.100.0.0/16",
            "--metrics-bind-address", "", // given empty: the metrics server is off
            "--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0");

        Assert.Equal(TimeSpan.FromSeconds(30), settings.Proxy.Sync.SyncPeriod);
        Assert.False(settings.Proxy.MasqueradeAll);
        Assert.Equal("node-b", settings.Proxy.HostName);
        Assert.Equal([Cidr("10.100.0.0/16")], settings.Proxy.ClusterCidrs);
        Assert.Null(settings.MetricsBindAddress);
        Assert.Equal(LocalDetectMode.BridgeInterface, settings.Proxy.DetectLocalMode);
        Assert.Equal("cbr0", settings.Proxy.PodInterface);
        // Not given: from the file.
        Assert.Equal(TimeSpan.FromSeconds(2), settings.Proxy.Sync.MinSyncPeriod);
        Assert.Equal(IPEndPoint.Parse("0.0.0.0:10256"), settings.HealthzBindAddress);
        Assert.Equal([Cidr("192.168.0.0/16"), Cidr("fd00::/8")], settings.Proxy.NodePortAddresses.Cidrs);
    }

    [Fact]
    public void FlagOnlyGivenForThePrefix_CompletesTheFilesDetectLocalMode()
    {
        var path = Write(ConfigSamples.Header + "detectLocalMode: InterfaceNamePrefix\n");

        var settings = ConfigSamples.Bind($"--config={path}", "--manifests=/", "--pod-interface-name-prefix=cali");

        Assert.Equal(LocalDetectMode.InterfaceNamePrefix, settings.Proxy.DetectLocalMode);
        Assert.Equal("cali", settings.Proxy.PodInterface);
    }

    [Fact]
    public void NodePortAddressesPrimary_FromFileOrFlag()
    {
        var path = Write(ConfigSamples.Header + "nodePortAddresses:\n  - primary\n");

        Assert.Equal(NodePortAddressSetting.PrimaryIPs, ConfigSamples.Bind($"--config={path}", "--manifests=/").Proxy.NodePortAddresses);
        Assert.Equal(NodePortAddressSetting.PrimaryIPs, ConfigSamples.Bind("--manifests=/", "--nodeport-addresses=primary").Proxy.NodePortAddresses);
        // A flag given explicitly overrides the file's primary, and the other way round.
        Assert.Equal([Cidr("10.0.0.0/8")], ConfigSamples.Bind($"--config={path}", "--manifests=/", "--nodeport-addresses=10.0.0.0/8").Proxy.NodePortAddresses.Cidrs);
        var cidrs = Write(ConfigSamples.Header + "nodePortAddresses: [10.0.0.0/8]\n", "cidrs.conf");
        Assert.Equal(NodePortAddressSetting.PrimaryIPs, ConfigSamples.Bind($"--config={cidrs}", "--manifests=/", "--nodeport-addresses=primary").Proxy.NodePortAddresses);
        // Without either: every address, as before.
        Assert.Equal(NodePortAddressSetting.All, ConfigSamples.Bind("--manifests=/").Proxy.NodePortAddresses);
    }

    [Theory]
    [InlineData("--nodeport-addresses=primary,10.0.0.0/8", "--nodeport-addresses: 'primary' (the node's primary IPs) cannot be combined with other values; give either 'primary' alone or CIDRs")]
    [InlineData("--nodeport-addresses=10.0.0.0/8, primary", "--nodeport-addresses: 'primary' (the node's primary IPs) cannot be combined with other values")]
    [InlineData("--nodeport-addresses=10.0.0.1", "--nodeport-addresses: '10.0.0.1' is not a CIDR such as 10.244.0.0/16, nor 'primary'")]
    [InlineData("--ipvs-exclude-cidrs=10.0.0.0/8,10.1.2.3", "--ipvs-exclude-cidrs: '10.1.2.3' is not a CIDR such as 10.244.0.0/16")]
    [InlineData("--ipvs-tcp-timeout=-1s", "--ipvs-tcp-timeout: '-1s' is not a duration such as 500ms, 1s or 1m30s")]
    [InlineData("--ipvs-udp-timeout=soon", "--ipvs-udp-timeout: 'soon' is not a duration")]
    [InlineData("--ipvs-tcpfin-timeout=1000h", "--ipvs-tcpfin-timeout: '1000h' is more than IPVS takes (2147483s)")]
    public void BadListOrDurationFlag_OneLineNamingTheFlag(string flag, string expected)
    {
        var e = Assert.Throws<UsageException>(() => ConfigSamples.Bind("--manifests=/", flag));

        Assert.StartsWith(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void IpvsSection_EveryFieldReachesTheSettings_FlagsOverIt()
    {
        var path = Write(ConfigSamples.Header + """
            mode: ipvs
            ipvs:
              excludeCIDRs:
                - 192.168.50.0/24
                - fd00:50::/64
              strictARP: true
              tcpTimeout: 15m
              tcpFinTimeout: 30s
              udpTimeout: 0s
            """);

        var settings = ConfigSamples.Bind($"--config={path}", "--manifests=/");

        Assert.Equal([Cidr("192.168.50.0/24"), Cidr("fd00:50::/64")], settings.IpvsExcludeCidrs);
        Assert.True(settings.IpvsStrictArp);
        Assert.Equal(new IpvsTimeoutSettings(TimeSpan.FromMinutes(15), TimeSpan.FromSeconds(30), TimeSpan.Zero), settings.IpvsTimeouts);
        // Applied, so no longer reported as ignored.
        Assert.Empty(settings.IgnoredConfigFields);

        var flags = ConfigSamples.Bind($"--config={path}", "--manifests=/", "--ipvs-exclude-cidrs=10.200.0.0/16", "--ipvs-strict-arp=false", "--ipvs-udp-timeout=1m", "--ipvs-tcp-timeout=0s");
        Assert.Equal([Cidr("10.200.0.0/16")], flags.IpvsExcludeCidrs);
        Assert.False(flags.IpvsStrictArp);
        // A flag given (even 0s, "keep the kernel's") wins over the file; the others come from it.
        Assert.Equal(new IpvsTimeoutSettings(TimeSpan.Zero, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(1)), flags.IpvsTimeouts);

        // proxyplanes cleanup reads the same file and flag: what is excluded is not its to delete.
        Assert.Equal([Cidr("192.168.50.0/24"), Cidr("fd00:50::/64")], ConfigSamples.BindCleanup($"--config={path}").IpvsExcludeCidrs);
        Assert.Equal([Cidr("10.200.0.0/16")], ConfigSamples.BindCleanup($"--config={path}", "--ipvs-exclude-cidrs=10.200.0.0/16").IpvsExcludeCidrs);
        Assert.Empty(ConfigSamples.BindCleanup().IpvsExcludeCidrs);
        Assert.Equal("--ipvs-exclude-cidrs: '10.200.0.0' is not a CIDR such as 10.244.0.0/16",
            Assert.Throws<UsageException>(() => ConfigSamples.BindCleanup("--ipvs-exclude-cidrs=10.200.0.0")).Message);

        // Neither file nor flags: nothing asked of the kernel.
        var none = ConfigSamples.Bind("--manifests=/");
        Assert.Empty(none.IpvsExcludeCidrs);
        Assert.False(none.IpvsStrictArp);
        Assert.Equal(IpvsTimeoutSettings.KeepTheKernels, none.IpvsTimeouts);
    }

    [Fact]
    public void TopLevelSyncPeriods_AreRead()
    {
        var config = KubeProxyConfigFile.Parse(ConfigSamples.Header + "syncPeriod: 10s\nminSyncPeriod: 100ms\niptables:\n  syncPeriod: 10s\n", "c.conf");

        Assert.Equal(TimeSpan.FromSeconds(10), config.SyncPeriodFor("iptables")!.Value);
        Assert.Equal(TimeSpan.FromMilliseconds(100), config.MinSyncPeriodFor("iptables")!.Value);
        Assert.Equal("c.conf:4: minSyncPeriod", config.MinSyncPeriodFor("iptables")!.Source);
        Assert.Equal("c.conf:6: iptables.syncPeriod", config.SyncPeriodFor("iptables")!.Source);
        Assert.Equal("c.conf:3: syncPeriod", config.SyncPeriodFor("ebpf")!.Source);
    }

    [Fact]
    public void EachModeReadsItsOwnSection_AsKubeProxy()
    {
        var config = KubeProxyConfigFile.Parse(ConfigSamples.Header + """
            iptables:
              syncPeriod: 20s
              masqueradeAll: true
            ipvs:
              syncPeriod: 40s
              minSyncPeriod: 5s
            nftables:
              syncPeriod: 50s
              masqueradeAll: false
            """);

        Assert.Equal(TimeSpan.FromSeconds(20), config.SyncPeriodFor("iptables")!.Value);
        Assert.Null(config.MinSyncPeriodFor("iptables"));
        Assert.Equal(TimeSpan.FromSeconds(40), config.SyncPeriodFor("ipvs")!.Value);
        Assert.Equal(TimeSpan.FromSeconds(5), config.MinSyncPeriodFor("ipvs")!.Value);
        Assert.Equal(TimeSpan.FromSeconds(50), config.SyncPeriodFor("nftables")!.Value);
        // ipvs mode masquerades by iptables.masqueradeAll, nftables by its own.
        Assert.True(config.MasqueradeAllFor("ipvs")!.Value);
        Assert.False(config.MasqueradeAllFor("nftables")!.Value);
    }

    [Fact]
    public void Json_IsReadToo()
    {
        var config = KubeProxyConfigFile.Parse("""{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "mode": "iptables", "iptables": {"masqueradeAll": true}}""");

        Assert.Equal("iptables", config.Mode!.Value);
        Assert.True(config.MasqueradeAllFor("iptables")!.Value);
    }

    public static TheoryData<string, int, string> BadFiles => ConfigSamples.BadFiles;

    public static TheoryData<string, int, string> MoreBadFiles => new()
    {
        { "mode: userspace\n", 3, "mode: 'userspace' is not a mode; use one of iptables, nftables, ipvs, ebpf" },
        { "detectLocalMode: PodCIDR\n", 3, "detectLocalMode: 'PodCIDR' is not ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface" },
        { "detectLocal:\n  bridgeInterface: a-very-long-bridge-name\n", 4, "detectLocal.bridgeInterface: 'a-very-long-bridge-name' is not an interface name" },
        { "clusterCIDR: 10.0.0.0/8,10.1.0.0/16\n", 3, "clusterCIDR: give at most one CIDR per IP family" },
        { "nodePortAddresses:\n  - 10.0.0.0/8\n  - nope\n", 5, "nodePortAddresses: 'nope' is not a CIDR" },
        { "nodePortAddresses:\n  - 10.0.0.0/8\n  - primary\n", 5, "nodePortAddresses: 'primary' (the node's primary IPs) cannot be combined with other values; give either 'primary' alone or CIDRs" },
        { "nodePortAddresses: [primary, primary]\n", 3, "nodePortAddresses: 'primary' (the node's primary IPs) cannot be combined with other values" },
        { "nodePortAddresses:\n  - 10.0.0.1\n", 4, "nodePortAddresses: '10.0.0.1' is not a CIDR such as 10.244.0.0/16, nor 'primary'" },
        { "nodePortAddresses: 10.0.0.0/8\n", 3, "nodePortAddresses: expected a list of CIDRs, or [primary]" },
        { "nodePortAddresses: primary\n", 3, "nodePortAddresses: expected a list of CIDRs, or [primary]" },
        { "metricsBindAddress: nowhere\n", 3, "metricsBindAddress: 'nowhere' is not an address:port" },
        { "iptables:\n  masqueradeAll: maybe\n", 4, "iptables.masqueradeAll: 'maybe' is not true or false" },
        { "iptables:\n  masqueradeBit: 15\n", 4, "iptables.masqueradeBit: 15 is not supported; proxyplanes uses kube-proxy's default, 14" },
        { "iptables:\n  syncPeriod: 48h\n", 4, "iptables.syncPeriod: '48h' is more than 24h" },
        { "iptables: fast\n", 3, "iptables: expected a mapping of fields" },
        { "mode: [iptables]\n", 3, "mode: expected a single value, not a list" },
        { "syncPeriod: 10s\niptables:\n  syncPeriod: 20s\n", 5, "iptables.syncPeriod: 20s disagrees with syncPeriod (10s, line 3); give one" },
        { "nftables:\n  minSyncPeriod: soon\n", 4, "nftables.minSyncPeriod: 'soon' is not a duration" },
        { "nftables:\n  masqueradeBit: 3\n", 4, "nftables.masqueradeBit: 3 is not supported" },
        { "conntrack:\n  min: -1\n", 4, "conntrack.min: -1 must not be negative" },
        { "conntrack:\n  maxPerCore: many\n", 4, "conntrack.maxPerCore: 'many' is not a whole number" },
        { "conntrack:\n  tcpEstablishedTimeout: -1h\n", 4, "conntrack.tcpEstablishedTimeout: '-1h' must not be negative" },
        { "conntrack:\n  udpTimeout: 5 minutes\n", 4, "conntrack.udpTimeout: '5 minutes' is not a duration" },
        { "conntrack:\n  tcpBeLiberal: true\n  bogus: 1\n", 5, "unknown field 'conntrack.bogus'" },
        { "mode: iptables\nmode: ipvs\n", 4, "duplicate key mode" },
        { "ipvs:\n  excludeCIDRs:\n    - 10.0.0.0/8\n    - 10.1.2.3\n", 6, "ipvs.excludeCIDRs: '10.1.2.3' is not a CIDR such as 10.244.0.0/16" },
        { "ipvs:\n  excludeCIDRs: 10.0.0.0/8\n", 4, "ipvs.excludeCIDRs: expected a list of CIDRs such as 10.96.100.0/24" },
        { "ipvs:\n  excludeCIDRs:\n    - [10.0.0.0/8]\n", 5, "ipvs.excludeCIDRs: expected a single value, not a list" },
        { "ipvs:\n  strictARP: yes please\n", 4, "ipvs.strictARP: 'yes please' is not true or false" },
        { "ipvs:\n  strictARP:\n    enabled: true\n", 4, "ipvs.strictARP: expected a single value, not a mapping" },
        { "ipvs:\n  tcpTimeout: -5s\n", 4, "ipvs.tcpTimeout: '-5s' must not be negative" },
        { "ipvs:\n  tcpFinTimeout: 2 minutes\n", 4, "ipvs.tcpFinTimeout: '2 minutes' is not a duration such as 500ms, 1s or 1m30s" },
        { "ipvs:\n  udpTimeout: [30s]\n", 4, "ipvs.udpTimeout: expected a single value, not a list" },
        { "ipvs:\n  udpTimeout: 1000h\n", 4, "ipvs.udpTimeout: '1000h' is more than IPVS takes (2147483s)" },
        { "iptables:\n  syncPeriod: 1s\n bad: x\n", 5, "while parsing a block mapping, did not find expected key" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    [MemberData(nameof(MoreBadFiles))]
    public void BadField_NamesFileLineAndField(string body, int line, string expected)
    {
        var e = Assert.Throws<ConfigFileException>(() => KubeProxyConfigFile.Parse(ConfigSamples.Header + body, "/etc/kube-proxy/config.conf"));

        Assert.Equal(line, e.Line);
        Assert.StartsWith($"/etc/kube-proxy/config.conf:{line}: {expected}", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    public static TheoryData<string, string> BadHeaders => new()
    {
        { "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n", "c.conf:2: kind: 'KubeletConfiguration' is not KubeProxyConfiguration" },
        { "apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n", "c.conf:1: apiVersion: 'kubeproxy.config.k8s.io/v1beta1' is not supported; use kubeproxy.config.k8s.io/v1alpha1" },
        { "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nmode: iptables\n", "c.conf:1: kind is missing; a kube-proxy config file starts with apiVersion: kubeproxy.config.k8s.io/v1alpha1 and kind: KubeProxyConfiguration" },
        { "kind: KubeProxyConfiguration\n", "c.conf:1: apiVersion is missing" },
        { "", "c.conf: is empty; expected a KubeProxyConfiguration" },
        { "# nothing\n---\n", "c.conf: is empty" },
        { ConfigSamples.Header + "---\n" + ConfigSamples.Header, "c.conf:4: holds 2 YAML documents; expected one KubeProxyConfiguration" },
        { "- mode\n", "c.conf:1: expected a KubeProxyConfiguration mapping" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void WrongKindOrVersion_IsAClearError(string text, string expected)
    {
        var e = Assert.Throws<ConfigFileException>(() => KubeProxyConfigFile.Parse(text, "c.conf"));

        Assert.StartsWith(expected, e.Message);
    }

    public static TheoryData<string, string[], string> BindErrors => new()
    {
        // Checks across fields, made once flags and file are combined, name where each value came from.
        { "detectLocalMode: InterfaceNamePrefix\n", [], "{0}:3: detectLocalMode: InterfaceNamePrefix needs detectLocal.interfaceNamePrefix or --pod-interface-name-prefix" },
        { "iptables:\n  minSyncPeriod: 1m\n", [], "{0}:4: iptables.minSyncPeriod (60s) must not exceed --sync-period (30s)" },
        { "iptables:\n  minSyncPeriod: 1m\n  syncPeriod: 40s\n", [], "{0}:4: iptables.minSyncPeriod (60s) must not exceed {0}:5: iptables.syncPeriod (40s)" },
        { "iptables:\n  syncPeriod: 10s\n", ["--min-sync-period=20s"], "--min-sync-period (20s) must not exceed {0}:4: iptables.syncPeriod (10s)" },
    };

    [Theory]
    [MemberData(nameof(BindErrors))]
    public void CrossFieldProblems_NameTheirSource(string body, string[] flags, string expected)
    {
        var path = Write(ConfigSamples.Header + body);

        var e = Assert.Throws<UsageException>(() => ConfigSamples.Bind([$"--config={path}", "--manifests=/", .. flags]));

        Assert.StartsWith(string.Format(System.Globalization.CultureInfo.InvariantCulture, expected, path), e.Message);
    }

    [Fact]
    public void ModeFlag_OverridesTheFilesUnbuiltMode()
    {
        var path = Write(ConfigSamples.Header + "mode: ipvs\nipvs:\n  scheduler: wrr\n  syncPeriod: 10s\niptables:\n  syncPeriod: 20s\n");

        var settings = ConfigSamples.Bind($"--config={path}", "--manifests=/", "--mode=iptables");

        Assert.Equal("iptables", settings.Mode);
        Assert.Equal("wrr", settings.IpvsScheduler);
        // The mode that runs picks the section: iptables.syncPeriod, not ipvs.syncPeriod.
        Assert.Equal(TimeSpan.FromSeconds(20), settings.Proxy.Sync.SyncPeriod);
    }

    [Fact]
    public void MissingConfigFile_IsAFlagError()
    {
        var e = Assert.Throws<UsageException>(() => ConfigSamples.Bind("--config=/nonexistent/config.conf", "--manifests=/"));
        Assert.Equal("--config: '/nonexistent/config.conf' does not exist", e.Message);
    }
}

/// <summary>`--config` through the real binary: one line naming file, line and field, exit code 2; and a daemon configured by a file.</summary>
[Collection(KernelCollection.Name)]
public sealed class ConfigFileCliTests
{
    public static TheoryData<string, int, string> BadFiles => ConfigSamples.BadFiles;

    [Theory]
    [MemberData(nameof(BadFiles))]
    [InlineData("kind: KubeletConfiguration\n", 2, "kind: 'KubeletConfiguration' is not KubeProxyConfiguration")]
    public async Task Run_BadConfigFile_PrintsOneLineWithFileAndLine_Exit2(string body, int line, string expected)
    {
        var folder = Directory.CreateTempSubdirectory("proxyplanes-config-");
        try
        {
            var path = Path.Combine(folder.FullName, "config.conf");
            // The wrong-kind case replaces the header's kind line.
            var text = body.StartsWith("kind:", StringComparison.Ordinal)
                ? ConfigSamples.Header.Replace("kind: KubeProxyConfiguration\n", body, StringComparison.Ordinal)
                : ConfigSamples.Header + body;
            File.WriteAllText(path, text);

            // As the DaemonSet runs it: no --manifests, so the file is checked before anything else.
            var result = await RunInNamespaceAsync(["run", $"--config={path}", "--hostname-override=node-a"]);

            Assert.Equal(2, result.ExitCode);
            var lines = result.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Single(lines);
            Assert.StartsWith($"proxyplanes: {path}:{line}: {expected}", lines[0]);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Run_MissingConfigFile_Exit2()
    {
        var result = await RunInNamespaceAsync(["run", "--config=/nonexistent/config.conf", "--manifests=/"]);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal("proxyplanes: --config: '/nonexistent/config.conf' does not exist", result.StandardError.Trim());
    }

    [Fact]
    public async Task Run_WithConfigFile_ServesWhatTheFileSays_FlagsOverIt()
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 2);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", "10.96.0.10"));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1)));
        var config = Path.Combine(scenario.Manifests.Parent!.FullName, $"{scenario.Manifests.Name}.conf");
        File.WriteAllText(config, ConfigSamples.Header + $"""
            mode: iptables
            hostnameOverride: {ProxyScenario.NodeName}
            clusterCIDR: {scenario.Sandbox.ClusterCidr}
            metricsBindAddress: 127.0.0.1:10259
            healthzBindAddress: 127.0.0.1:10256
            iptables:
              minSyncPeriod: 50ms
              syncPeriod: 1m0s
            conntrack:
              maxPerCore: 0
            """);
        try
        {
            // The health address from the file is overridden by the flag; the metrics address is the file's.
            await using var proxy = ProxyProcess.Start(scenario.Sandbox.Node,
                ["run", $"--config={config}", $"--manifests={scenario.Manifests.FullName}", "--healthz-bind-address=127.0.0.1:10257"],
                metricsPort: 10259);
            await proxy.WaitHealthyAsync(TimeSpan.FromSeconds(60), healthzPort: 10257);

            Assert.Contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds", await proxy.ScrapeAsync());
            Assert.False((await proxy.GetAsync(10256, "/healthz")).IsAnswered);
            var spread = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, "10.96.0.10", 80);
            Assert.Equal(["pod-0", "pod-1"], spread.Keys.Order());
        }
        finally
        {
            File.Delete(config);
        }
    }

    [Fact]
    public async Task Run_ConntrackSettings_WrittenInTheProxysNamespace_TheGlobalMaxRefusedWithOneWarning()
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 1);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", "10.96.0.10"));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0)));
        var config = Path.Combine(scenario.Manifests.Parent!.FullName, $"{scenario.Manifests.Name}.conf");
        // min far above any node's value: nf_conntrack_max must be raised, which a child namespace cannot do.
        File.WriteAllText(config, ConfigSamples.Header + $"""
            mode: iptables
            clusterCIDR: {scenario.Sandbox.ClusterCidr}
            conntrack:
              maxPerCore: 32768
              min: 999999999
              tcpEstablishedTimeout: 5h
              tcpCloseWaitTimeout: 30m
              udpTimeout: 45s
              udpStreamTimeout: 3m
              tcpBeLiberal: true
            """);
        string[] sysctls =
        [
            "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_close_wait", "nf_conntrack_udp_timeout",
            "nf_conntrack_udp_timeout_stream", "nf_conntrack_tcp_be_liberal",
        ];
        async Task<string[]> InNodeAsync() =>
            (await scenario.Sandbox.Node.CheckedExecAsync(["sh", "-c", string.Join("; ", sysctls.Select(n => $"cat /proc/sys/net/netfilter/{n}"))])).StandardOutput
            .Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string[] InRoot() => [.. sysctls.Select(n => File.ReadAllText($"/proc/sys/net/netfilter/{n}").Trim()), File.ReadAllText("/proc/sys/net/netfilter/nf_conntrack_max").Trim(),
            File.ReadAllText("/sys/module/nf_conntrack/parameters/hashsize").Trim()];
        var rootBefore = InRoot();
        var nodeBefore = await InNodeAsync();
        Assert.NotEqual(["18000", "1800", "45", "180", "1"], nodeBefore); // positive control: the proxy must change them
        try
        {
            await using var proxy = ProxyProcess.Start(scenario.Sandbox.Node,
                ["run", $"--config={config}", $"--manifests={scenario.Manifests.FullName}", $"--hostname-override={ProxyScenario.NodeName}"]);
            await proxy.WaitHealthyAsync(TimeSpan.FromSeconds(60));

            Assert.Equal(["18000", "1800", "45", "180", "1"], await InNodeAsync());
            var warnings = proxy.Output.Split('\n').Where(l => l.Contains("cannot set", StringComparison.Ordinal)).ToList();
            Assert.True(warnings.Count == 1, proxy.Output);
            Assert.Contains("conntrack.maxPerCore/min: cannot set net.netfilter.nf_conntrack_max to 999999999", warnings[0]);
            Assert.Equal(rootBefore, InRoot()); // the machine's own namespace, and the global hash table, untouched
            Assert.Equal(["pod-0"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, "10.96.0.10", 80, count: 5)).Keys);
        }
        finally
        {
            File.Delete(config);
        }
    }
}
