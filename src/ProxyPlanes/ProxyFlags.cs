using System.CommandLine;
using System.Net;
using ProxyPlanes.Config;
using ProxyPlanes.Backends.Ipvs;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;
using ProxyPlanes.Web;

namespace ProxyPlanes;

/// <summary>Everything `proxyplanes run` needs, validated: the flags, over the --config file, over the defaults.</summary>
public sealed record RunSettings(
    string Mode,
    string ManifestsPath,
    ProxyOptions Proxy,
    IPEndPoint? MetricsBindAddress,
    IPEndPoint? HealthzBindAddress,
    string IptablesVariant,
    int Verbosity)
{
    /// <summary>The --config file the settings were read from, if any.</summary>
    public string? ConfigFile { get; init; }

    /// <summary><c>ipvs.scheduler</c> from the config file (null: the IPVS mode's default, rr); kept for the IPVS mode.</summary>
    public string? IpvsScheduler { get; init; }

    /// <summary><c>--ipvs-exclude-cidrs</c> / <c>ipvs.excludeCIDRs</c>: virtual servers in them are never deleted in IPVS mode.</summary>
    public EquatableArray<IpPrefix> IpvsExcludeCidrs { get; init; } = EquatableArray<IpPrefix>.Empty;

    /// <summary><c>--ipvs-strict-arp</c> / <c>ipvs.strictARP</c>.</summary>
    public bool IpvsStrictArp { get; init; }

    /// <summary><c>--ipvs-tcp-timeout</c>, <c>--ipvs-tcpfin-timeout</c>, <c>--ipvs-udp-timeout</c> / <c>ipvs.*Timeout</c>; zeros keep the kernel's.</summary>
    public IpvsTimeoutSettings IpvsTimeouts { get; init; } = IpvsTimeoutSettings.KeepTheKernels;

    /// <summary><c>--bpf-fs</c>: the bpf filesystem whose <c>proxyplanes</c> folder holds the eBPF mode's pins; null for /sys/fs/bpf.</summary>
    public string? BpfFs { get; init; }

    /// <summary><c>--bpf-cgroup</c>: the cgroup v2 directory the eBPF mode's socket hooks attach to; null for the host's cgroup v2 root.</summary>
    public string? BpfCgroup { get; init; }

    /// <summary>The config file's <c>conntrack</c> settings (kube-proxy's defaults without one). Not applied to the node's sysctls yet.</summary>
    public ConntrackSettings Conntrack { get; init; } = ConntrackSettings.KubeProxyDefaults;

    /// <summary><c>clientConnection.kubeconfig</c> from the config file, for the Kubernetes API source; a --kubeconfig flag is to override it.</summary>
    public string? Kubeconfig { get; init; }

    /// <summary>kube-proxy fields the config file sets that this build does not act on (dotted names), to be reported.</summary>
    public EquatableArray<string> IgnoredConfigFields { get; init; } = EquatableArray<string>.Empty;
}

/// <summary>
/// Flags keep kube-proxy's names where kube-proxy has one, so an operator's habits carry over.
/// </summary>
public sealed class ProxyFlags
{
    public Option<string?> Config { get; } = new("--config") { Description = "A kube-proxy config file (KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1), as in kube-proxy's ConfigMap; flags given explicitly override it" };
    public Option<string> Mode { get; } = new("--mode") { Description = "Data plane: iptables, nftables, ipvs or ebpf", DefaultValueFactory = _ => "iptables" };
    public Option<string?> Manifests { get; } = new("--manifests") { Description = "Serve a YAML/JSON file or folder of Services, EndpointSlices and Nodes (watched for edits) instead of the Kubernetes API" };
    public Option<string?> Kubeconfig { get; } = new("--kubeconfig") { Description = "kubeconfig of the Kubernetes API to watch (default: the in-cluster service account)" };
    public Option<string?> HostnameOverride { get; } = new("--hostname-override") { Description = "This node's name, as in EndpointSlices' nodeName (default: the host name)" };
    public Option<string> ClusterCidr { get; } = new("--cluster-cidr") { Description = "Pod CIDRs of the cluster, comma-separated: traffic from outside them to a cluster IP is masqueraded", DefaultValueFactory = _ => "" };
    public Option<string> MinSyncPeriod { get; } = new("--min-sync-period") { Description = "Minimum interval between syncs (Go duration)", DefaultValueFactory = _ => "1s" };
    public Option<string> SyncPeriod { get; } = new("--sync-period") { Description = "How often a sync runs at least: partial, with a canary check that forces a full sync when our rules were flushed (Go duration)", DefaultValueFactory = _ => "30s" };
    public Option<string> DetectLocalMode { get; } = new("--detect-local-mode") { Description = "How pod traffic is told apart: ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface", DefaultValueFactory = _ => "ClusterCIDR" };
    public Option<string?> PodInterfaceNamePrefix { get; } = new("--pod-interface-name-prefix") { Description = "With InterfaceNamePrefix: pod traffic arrives on interfaces with this prefix" };
    public Option<string?> PodBridgeInterface { get; } = new("--pod-bridge-interface") { Description = "With BridgeInterface: pod traffic arrives on this bridge" };
    public Option<bool> MasqueradeAll { get; } = new("--masquerade-all") { Description = "SNAT all traffic sent to service cluster IPs" };
    public Option<string> NodePortAddresses { get; } = new("--nodeport-addresses") { Description = "Node addresses that accept node ports: CIDRs, comma-separated, or 'primary' (the node's primary IP of each family, from its Node object) (default: all)", DefaultValueFactory = _ => "" };
    public Option<string> MetricsBindAddress { get; } = new("--metrics-bind-address") { Description = "Address of the metrics server (/metrics, /proxyMode); empty disables", DefaultValueFactory = _ => "127.0.0.1:10249" };
    public Option<string> HealthzBindAddress { get; } = new("--healthz-bind-address") { Description = "Address of the health server (/healthz, /livez); empty disables", DefaultValueFactory = _ => "0.0.0.0:10256" };
    public Option<string> IptablesVariant { get; } = new("--iptables-variant") { Description = "iptables flavour: auto (detect what the node uses), nft or legacy", DefaultValueFactory = _ => "auto" };
    public Option<string?> IpvsScheduler { get; } = new("--ipvs-scheduler") { Description = "IPVS scheduler for --mode=ipvs: rr (default), wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh, fo, ovf, twos" };
    public Option<string> IpvsExcludeCidrs { get; } = new("--ipvs-exclude-cidrs") { Description = "CIDRs, comma-separated, whose IPVS virtual servers --mode=ipvs leaves alone (never deletes)", DefaultValueFactory = _ => "" };
    public Option<bool> IpvsStrictArp { get; } = new("--ipvs-strict-arp") { Description = "--mode=ipvs: raise net.ipv4.conf.all.arp_ignore to 1 and arp_announce to 2, so the node answers ARP only for the addresses of the link asked on" };
    public Option<string> IpvsTcpTimeout { get; } = new("--ipvs-tcp-timeout") { Description = "--mode=ipvs: IPVS timeout of idle established TCP connections (Go duration); 0 keeps the kernel's", DefaultValueFactory = _ => "0s" };
    public Option<string> IpvsTcpFinTimeout { get; } = new("--ipvs-tcpfin-timeout") { Description = "--mode=ipvs: IPVS timeout of TCP connections after a FIN (Go duration); 0 keeps the kernel's", DefaultValueFactory = _ => "0s" };
    public Option<string> IpvsUdpTimeout { get; } = new("--ipvs-udp-timeout") { Description = "--mode=ipvs: IPVS timeout of UDP flows (Go duration); 0 keeps the kernel's", DefaultValueFactory = _ => "0s" };
    public Option<string?> BpfFs { get; } = new("--bpf-fs") { Description = "--mode=ebpf: a bpf filesystem (mounted there when it is not one); maps and links are pinned in its proxyplanes folder (default /sys/fs/bpf)" };
    public Option<string?> BpfCgroup { get; } = new("--bpf-cgroup") { Description = "--mode=ebpf: the cgroup v2 directory whose processes get the socket hooks (default: the host's cgroup v2 root, from /proc/self/mountinfo)" };
    public Option<int> Verbosity { get; } = new("--v") { Description = "Log verbosity: 0 (warnings), 2 (each sync, default), 4 (debug, with rule scripts)", DefaultValueFactory = _ => 2 };

    public void AddTo(System.CommandLine.Command command)
    {
        foreach (var option in new Option[] { Config, Mode, Manifests, Kubeconfig, HostnameOverride, ClusterCidr, DetectLocalMode, PodInterfaceNamePrefix, PodBridgeInterface, MinSyncPeriod, SyncPeriod, MasqueradeAll, NodePortAddresses, MetricsBindAddress, HealthzBindAddress, IptablesVariant, IpvsScheduler, IpvsExcludeCidrs, IpvsStrictArp, IpvsTcpTimeout, IpvsTcpFinTimeout, IpvsUdpTimeout, BpfFs, BpfCgroup, Verbosity })
            command.Options.Add(option);
    }

    /// <summary>
    /// Validates the flags and the --config file into <see cref="RunSettings"/>; throws <see cref="UsageException"/>
    /// with a one-line message naming the flag, or the file, line and field. A flag given explicitly on the
    /// command line overrides the file; the file overrides the flags' defaults.
    /// </summary>
    public RunSettings Bind(ParseResult result)
    {
        var config = LoadConfig(result);

        var modeFile = FromFile(result, Mode, config?.Mode);
        var mode = modeFile?.Value ?? result.GetValue(Mode)!;
        if ((modeFile is null ? Modes.Problem(mode) : Modes.Problem(mode, modeFile.Source)) is { } problem) throw new UsageException(problem);
        var manifests = result.GetValue(Manifests);
        if (!string.IsNullOrWhiteSpace(manifests) && result.GetValue(Kubeconfig) is { Length: > 0 })
            throw new UsageException("--manifests and --kubeconfig name two sources: give one");
        if (manifests is not null && !File.Exists(manifests) && !Directory.Exists(manifests))
            throw new UsageException($"--manifests: '{manifests}' does not exist");

        // The file's periods (and masqueradeAll) come from the section of the mode that runs (iptables.*,
        // nftables.*...), as in kube-proxy, and were checked when read (a duration, at most 24h); the flags' are checked here.
        var minSyncFile = FromFile(result, MinSyncPeriod, config?.MinSyncPeriodFor(mode));
        var syncFile = FromFile(result, SyncPeriod, config?.SyncPeriodFor(mode));
        var minSync = minSyncFile?.Value ?? Duration(result, MinSyncPeriod);
        var sync = syncFile?.Value ?? Duration(result, SyncPeriod);
        if (sync <= TimeSpan.Zero || sync > TimeSpan.FromDays(1)) throw new UsageException("--sync-period must be greater than 0 and at most 24h");
        if (minSync > sync)
            throw new UsageException($"{minSyncFile?.Source ?? MinSyncPeriod.Name} ({GoDuration.Format(minSync)}) must not exceed {syncFile?.Source ?? SyncPeriod.Name} ({GoDuration.Format(sync)})");

        var variant = result.GetValue(IptablesVariant)!;
        if (variant is not ("auto" or "nft" or "legacy")) throw new UsageException($"--iptables-variant: '{variant}' is not auto, nft or legacy");

        var (detectLocal, podInterface) = BindDetectLocal(result, config);

        var host = FromFile(result, HostnameOverride, config?.HostnameOverride)?.Value ?? result.GetValue(HostnameOverride);
        if (string.IsNullOrWhiteSpace(host)) host = Dns.GetHostName();

        var proxy = new ProxyOptions
        {
            HostName = host.Trim().ToLowerInvariant(),
            ClusterCidrs = FromFile(result, ClusterCidr, config?.ClusterCidrs)?.Value ?? Prefixes(result.GetValue(ClusterCidr)!, ClusterCidr.Name),
            DetectLocalMode = detectLocal,
            PodInterface = podInterface,
            MasqueradeAll = FromFile(result, MasqueradeAll, config?.MasqueradeAllFor(mode))?.Value ?? result.GetValue(MasqueradeAll),
            NodePortAddresses = FromFile(result, NodePortAddresses, config?.NodePortAddresses)?.Value ?? ParseNodePortAddresses(result.GetValue(NodePortAddresses)!),
            Sync = new SyncRunnerOptions { MinSyncPeriod = minSync, SyncPeriod = sync },
        };
        try
        {
            return new RunSettings(
                mode, manifests ?? "", proxy,
                FromFile(result, MetricsBindAddress, config?.MetricsBindAddress)?.Value ?? ProxyHttpEndpoints.ParseBindAddress(result.GetValue(MetricsBindAddress)!, MetricsBindAddress.Name),
                FromFile(result, HealthzBindAddress, config?.HealthzBindAddress)?.Value ?? ProxyHttpEndpoints.ParseBindAddress(result.GetValue(HealthzBindAddress)!, HealthzBindAddress.Name),
                variant, result.GetValue(Verbosity))
            {
                ConfigFile = config?.File,
                IpvsScheduler = result.GetValue(IpvsScheduler) is { Length: > 0 } scheduler
                    ? IpvsSchedulers.Known.Contains(scheduler) ? scheduler
                        : throw new UsageException($"--ipvs-scheduler: '{scheduler}' is not an IPVS scheduler; use one of {string.Join(", ", IpvsSchedulers.Known)}")
                    : config?.IpvsScheduler?.Value,
                IpvsExcludeCidrs = FromFile(result, IpvsExcludeCidrs, config?.IpvsExcludeCidrs)?.Value ?? Prefixes(result.GetValue(IpvsExcludeCidrs)!, IpvsExcludeCidrs.Name),
                IpvsStrictArp = FromFile(result, IpvsStrictArp, config?.IpvsStrictArp)?.Value ?? result.GetValue(IpvsStrictArp),
                IpvsTimeouts = new IpvsTimeoutSettings(
                    IpvsTimeout(result, IpvsTcpTimeout, config?.IpvsTcpTimeout),
                    IpvsTimeout(result, IpvsTcpFinTimeout, config?.IpvsTcpFinTimeout),
                    IpvsTimeout(result, IpvsUdpTimeout, config?.IpvsUdpTimeout)),
                BpfFs = BindBpfFs(result),
                BpfCgroup = BindBpfCgroup(result),
                Conntrack = config?.Conntrack ?? ConntrackSettings.KubeProxyDefaults,
                Kubeconfig = result.GetResult(Kubeconfig) is { Implicit: false } ? result.GetValue(Kubeconfig) : config?.Kubeconfig?.Value,
                IgnoredConfigFields = config?.IgnoredFields ?? EquatableArray<string>.Empty,
            };
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary><c>proxyplanes cleanup</c> takes the settings that say what is not ours: <c>--config</c> and <c>--ipvs-exclude-cidrs</c>.</summary>
    public void AddCleanupTo(System.CommandLine.Command command)
    {
        command.Options.Add(Config);
        command.Options.Add(IpvsExcludeCidrs);
        command.Options.Add(BpfFs);
    }

    /// <summary><c>--bpf-fs</c>: an absolute path to a directory (it may not be a bpf filesystem yet: the eBPF mode mounts one there).</summary>
    private string? BindBpfFs(ParseResult result)
    {
        var path = result.GetValue(BpfFs);
        if (path is null) return null;
        if (!Path.IsPathRooted(path)) throw new UsageException($"--bpf-fs: '{path}' is not an absolute path");
        if (File.Exists(path)) throw new UsageException($"--bpf-fs: '{path}' is a file, not a directory");
        return Path.TrimEndingDirectorySeparator(path);
    }

    /// <summary><c>--bpf-cgroup</c>: an existing cgroup v2 directory (it has cgroup.procs and lies under a cgroup2 mount).</summary>
    private string? BindBpfCgroup(ParseResult result)
    {
        var path = result.GetValue(BpfCgroup);
        if (path is null) return null;
        if (!Path.IsPathRooted(path)) throw new UsageException($"--bpf-cgroup: '{path}' is not an absolute path");
        if (!Directory.Exists(path)) throw new UsageException($"--bpf-cgroup: '{path}' does not exist");
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var cgroup2 = Backends.Ebpf.EbpfLocation.MountPoints().Where(m => m.Type == "cgroup2").Select(m => m.Path);
        if (!File.Exists(Path.Combine(full, "cgroup.procs")) || !cgroup2.Any(root => full == root || full.StartsWith(root + "/", StringComparison.Ordinal)))
            throw new UsageException($"--bpf-cgroup: '{path}' is not a cgroup v2 directory (cgroup v2 is mounted at {string.Join(", ", cgroup2.DefaultIfEmpty("no place"))})");
        return full;
    }

    /// <summary>
    /// What <c>proxyplanes cleanup</c> must leave alone, from <c>--ipvs-exclude-cidrs</c> or the
    /// <c>--config</c> file's <c>ipvs.excludeCIDRs</c> (the flag wins, as for <c>run</c>).
    /// </summary>
    public CleanupScope BindCleanup(ParseResult result)
    {
        var config = LoadConfig(result);
        return new CleanupScope
        {
            BpfFs = BindBpfFs(result),
            IpvsExcludeCidrs = FromFile(result, IpvsExcludeCidrs, config?.IpvsExcludeCidrs)?.Value ?? Prefixes(result.GetValue(IpvsExcludeCidrs)!, IpvsExcludeCidrs.Name),
        };
    }

    /// <summary>Whether the user wrote <paramref name="option"/> on the command line (not just its default).</summary>
    public static bool Given(ParseResult result, Option option) => result.GetResult(option) is { Implicit: false };

    /// <summary>The file's value, unless the flag was given explicitly (flags override the file).</summary>
    private static ConfigValue<T>? FromFile<T>(ParseResult result, Option option, ConfigValue<T>? value) =>
        value is not null && !Given(result, option) ? value : null;

    /// <summary>The --config file, read and checked; null without --config (or with an empty one, as kube-proxy).</summary>
    private KubeProxyConfig? LoadConfig(ParseResult result)
    {
        var path = result.GetValue(Config);
        if (string.IsNullOrWhiteSpace(path)) return null;
        if (Directory.Exists(path)) throw new UsageException($"--config: '{path}' is a folder; name the config file (such as config.conf)");
        if (!File.Exists(path)) throw new UsageException($"--config: '{path}' does not exist");
        try
        {
            return KubeProxyConfigFile.Load(path);
        }
        catch (ConfigFileException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary>Interface names as the kernel takes them (IFNAMSIZ), for --pod-interface-name-prefix, --pod-bridge-interface and the file's detectLocal.</summary>
    public static bool ValidInterfaceName(string name) =>
        name.Length is > 0 and < 16 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    private (LocalDetectMode, string?) BindDetectLocal(ParseResult result, KubeProxyConfig? config)
    {
        var modeFile = FromFile(result, DetectLocalMode, config?.DetectLocalMode);
        var prefix = FromFile(result, PodInterfaceNamePrefix, config?.InterfaceNamePrefix)?.Value ?? result.GetValue(PodInterfaceNamePrefix);
        var bridge = FromFile(result, PodBridgeInterface, config?.BridgeInterface)?.Value ?? result.GetValue(PodBridgeInterface);
        var mode = modeFile?.Value ?? ParseDetectLocalMode(result.GetValue(DetectLocalMode)!);
        switch (mode)
        {
            case LocalDetectMode.InterfaceNamePrefix:
                if (string.IsNullOrEmpty(prefix) || !ValidInterfaceName(prefix))
                    throw new UsageException(modeFile is null
                        ? "--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix (an interface name prefix such as veth)"
                        : $"{modeFile.Source}: InterfaceNamePrefix needs detectLocal.interfaceNamePrefix or --pod-interface-name-prefix (an interface name prefix such as veth)");
                return (mode, prefix);
            case LocalDetectMode.BridgeInterface:
                if (string.IsNullOrEmpty(bridge) || !ValidInterfaceName(bridge))
                    throw new UsageException(modeFile is null
                        ? "--detect-local-mode=BridgeInterface needs --pod-bridge-interface (a bridge name such as cbr0)"
                        : $"{modeFile.Source}: BridgeInterface needs detectLocal.bridgeInterface or --pod-bridge-interface (a bridge name such as cbr0)");
                return (mode, bridge);
            default:
                return (mode, null);
        }
    }

    private static LocalDetectMode ParseDetectLocalMode(string mode) =>
        DetectLocalModeNamed(mode) ?? throw new UsageException($"--detect-local-mode: '{mode}' is not ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface");

    /// <summary>The detect-local mode kube-proxy names <paramref name="name"/> (case-insensitive), or null.</summary>
    public static LocalDetectMode? DetectLocalModeNamed(string name) => name.ToLowerInvariant() switch
    {
        "clustercidr" => LocalDetectMode.ClusterCidr,
        "nodecidr" => LocalDetectMode.NodeCidr,
        "interfacenameprefix" => LocalDetectMode.InterfaceNamePrefix,
        "bridgeinterface" => LocalDetectMode.BridgeInterface,
        _ => null,
    };

    private static TimeSpan Duration(ParseResult result, Option<string> option)
    {
        var text = result.GetValue(option)!;
        if (!GoDuration.TryParse(text, out var duration) || duration < TimeSpan.Zero)
            throw new UsageException($"{option.Name}: '{text}' is not a duration such as 500ms, 1s or 1m30s");
        return duration;
    }

    /// <summary>An IPVS timeout: the file's unless the flag was given; at most what every kernel takes.</summary>
    private static TimeSpan IpvsTimeout(ParseResult result, Option<string> option, ConfigValue<TimeSpan>? file)
    {
        if (FromFile(result, option, file) is { } fromFile) return fromFile.Value;
        var timeout = Duration(result, option);
        if (timeout > KubeProxyConfigFile.MaxIpvsTimeout)
            throw new UsageException($"{option.Name}: '{result.GetValue(option)}' is more than IPVS takes ({GoDuration.Format(KubeProxyConfigFile.MaxIpvsTimeout)})");
        return timeout;
    }

    private NodePortAddressSetting ParseNodePortAddresses(string text) =>
        NodePortAddressSetting.Parse(
            text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            (_, problem) => new UsageException($"{NodePortAddresses.Name}: {problem}"));

    private static EquatableArray<IpPrefix> Prefixes(string text, string flag)
    {
        var prefixes = new List<IpPrefix>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!part.Contains('/') || !IpPrefix.TryParse(part, out var prefix))
                throw new UsageException($"{flag}: '{part}' is not a CIDR such as 10.244.0.0/16");
            prefixes.Add(prefix);
        }
        if (prefixes.GroupBy(p => p.Family).Any(g => g.Count() > 1) && flag == "--cluster-cidr")
            throw new UsageException($"{flag}: give at most one CIDR per IP family");
        return new EquatableArray<IpPrefix>(prefixes);
    }
}

/// <summary>Bad flags or input: printed as one line, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);
