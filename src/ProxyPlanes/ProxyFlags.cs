using System.CommandLine;
using System.Net;
using ProxyPlanes.Core.Http;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Util;

namespace ProxyPlanes;

/// <summary>The modes the --mode flag names, and whether this build has them.</summary>
public static class Modes
{
    public static readonly string[] Known = ["iptables", "nftables", "ipvs", "ebpf"];
    public static readonly string[] Built = ["iptables"];

    /// <summary>Null when the mode can run; otherwise the one-line reason.</summary>
    public static string? Problem(string mode) =>
        !Known.Contains(mode) ? $"--mode: '{mode}' is not a mode; use one of {string.Join(", ", Known)}"
        : !Built.Contains(mode) ? $"--mode={mode} is not built yet; this build has {string.Join(", ", Built)}"
        : null;
}

/// <summary>Everything `proxyplanes run` needs, validated.</summary>
public sealed record RunSettings(
    string Mode,
    string ManifestsPath,
    ProxyOptions Proxy,
    IPEndPoint? MetricsBindAddress,
    IPEndPoint? HealthzBindAddress,
    string IptablesVariant,
    int Verbosity);

/// <summary>
/// Flags keep kube-proxy's names where kube-proxy has one, so an operator's habits carry over.
/// </summary>
public sealed class ProxyFlags
{
    public Option<string> Mode { get; } = new("--mode") { Description = "Data plane: iptables, nftables, ipvs or ebpf", DefaultValueFactory = _ => "iptables" };
    public Option<string?> Manifests { get; } = new("--manifests") { Description = "A YAML/JSON file or folder of Services, EndpointSlices and Nodes to serve (watched for edits)" };
    public Option<string?> HostnameOverride { get; } = new("--hostname-override") { Description = "This node's name, as in EndpointSlices' nodeName (default: the host name)" };
    public Option<string> ClusterCidr { get; } = new("--cluster-cidr") { Description = "Pod CIDRs of the cluster, comma-separated: traffic from outside them to a cluster IP is masqueraded", DefaultValueFactory = _ => "" };
    public Option<string> MinSyncPeriod { get; } = new("--min-sync-period") { Description = "Minimum interval between syncs (Go duration)", DefaultValueFactory = _ => "1s" };
    public Option<string> SyncPeriod { get; } = new("--sync-period") { Description = "Interval of the periodic full sync (Go duration)", DefaultValueFactory = _ => "30s" };
    public Option<string> DetectLocalMode { get; } = new("--detect-local-mode") { Description = "How pod traffic is told apart: ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface", DefaultValueFactory = _ => "ClusterCIDR" };
    public Option<string?> PodInterfaceNamePrefix { get; } = new("--pod-interface-name-prefix") { Description = "With InterfaceNamePrefix: pod traffic arrives on interfaces with this prefix" };
    public Option<string?> PodBridgeInterface { get; } = new("--pod-bridge-interface") { Description = "With BridgeInterface: pod traffic arrives on this bridge" };
    public Option<bool> MasqueradeAll { get; } = new("--masquerade-all") { Description = "SNAT all traffic sent to service cluster IPs" };
    public Option<string> NodePortAddresses { get; } = new("--nodeport-addresses") { Description = "CIDRs of node addresses that accept node ports, comma-separated (default: all)", DefaultValueFactory = _ => "" };
    public Option<string> MetricsBindAddress { get; } = new("--metrics-bind-address") { Description = "Address of the metrics server (/metrics, /proxyMode); empty disables", DefaultValueFactory = _ => "127.0.0.1:10249" };
    public Option<string> HealthzBindAddress { get; } = new("--healthz-bind-address") { Description = "Address of the health server (/healthz, /livez); empty disables", DefaultValueFactory = _ => "0.0.0.0:10256" };
    public Option<string> IptablesVariant { get; } = new("--iptables-variant") { Description = "iptables flavour: auto (detect what the node uses), nft or legacy", DefaultValueFactory = _ => "auto" };
    public Option<int> Verbosity { get; } = new("--v") { Description = "Log verbosity: 0 (warnings), 2 (each sync, default), 4 (debug, with rule scripts)", DefaultValueFactory = _ => 2 };

    public void AddTo(System.CommandLine.Command command)
    {
        foreach (var option in new Option[] { Mode, Manifests, HostnameOverride, ClusterCidr, DetectLocalMode, PodInterfaceNamePrefix, PodBridgeInterface, MinSyncPeriod, SyncPeriod, MasqueradeAll, NodePortAddresses, MetricsBindAddress, HealthzBindAddress, IptablesVariant, Verbosity })
            command.Options.Add(option);
    }

    /// <summary>Validates the flags; throws <see cref="UsageException"/> with a one-line message naming the flag.</summary>
    public RunSettings Bind(ParseResult result, bool requireManifests = true)
    {
        var mode = result.GetValue(Mode)!;
        if (Modes.Problem(mode) is { } problem) throw new UsageException(problem);
        var manifests = result.GetValue(Manifests);
        if (requireManifests && string.IsNullOrWhiteSpace(manifests))
            throw new UsageException("--manifests is required: name a YAML/JSON file or folder of Services and EndpointSlices");
        if (manifests is not null && !File.Exists(manifests) && !Directory.Exists(manifests))
            throw new UsageException($"--manifests: '{manifests}' does not exist");

        var minSync = Duration(result, MinSyncPeriod);
        var sync = Duration(result, SyncPeriod);
        if (sync <= TimeSpan.Zero || sync > TimeSpan.FromDays(1)) throw new UsageException("--sync-period must be greater than 0 and at most 24h");
        if (minSync > sync) throw new UsageException($"--min-sync-period ({GoDuration.Format(minSync)}) must not exceed --sync-period ({GoDuration.Format(sync)})");

        var variant = result.GetValue(IptablesVariant)!;
        if (variant is not ("auto" or "nft" or "legacy")) throw new UsageException($"--iptables-variant: '{variant}' is not auto, nft or legacy");

        var (detectLocal, podInterface) = BindDetectLocal(result);

        var host = result.GetValue(HostnameOverride);
        if (string.IsNullOrWhiteSpace(host)) host = Dns.GetHostName();

        var proxy = new ProxyOptions
        {
            HostName = host.Trim().ToLowerInvariant(),
            ClusterCidrs = Prefixes(result.GetValue(ClusterCidr)!, "--cluster-cidr"),
            DetectLocalMode = detectLocal,
            PodInterface = podInterface,
            MasqueradeAll = result.GetValue(MasqueradeAll),
            NodePortAddresses = Prefixes(result.GetValue(NodePortAddresses)!, "--nodeport-addresses"),
            Sync = new SyncRunnerOptions { MinSyncPeriod = minSync, SyncPeriod = sync },
        };
        try
        {
            return new RunSettings(
                mode, manifests ?? "", proxy,
                ProxyHttpEndpoints.ParseBindAddress(result.GetValue(MetricsBindAddress)!, "--metrics-bind-address"),
                ProxyHttpEndpoints.ParseBindAddress(result.GetValue(HealthzBindAddress)!, "--healthz-bind-address"),
                variant, result.GetValue(Verbosity));
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }
    }

    private (LocalDetectMode, string?) BindDetectLocal(ParseResult result)
    {
        var mode = result.GetValue(DetectLocalMode)!;
        var prefix = result.GetValue(PodInterfaceNamePrefix);
        var bridge = result.GetValue(PodBridgeInterface);
        static bool ValidInterface(string name) => name.Length is > 0 and < 16 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
        switch (mode.ToLowerInvariant())
        {
            case "clustercidr": return (LocalDetectMode.ClusterCidr, null);
            case "nodecidr": return (LocalDetectMode.NodeCidr, null);
            case "interfacenameprefix":
                if (string.IsNullOrEmpty(prefix) || !ValidInterface(prefix))
                    throw new UsageException("--detect-local-mode=InterfaceNamePrefix needs --pod-interface-name-prefix (an interface name prefix such as veth)");
                return (LocalDetectMode.InterfaceNamePrefix, prefix);
            case "bridgeinterface":
                if (string.IsNullOrEmpty(bridge) || !ValidInterface(bridge))
                    throw new UsageException("--detect-local-mode=BridgeInterface needs --pod-bridge-interface (a bridge name such as cbr0)");
                return (LocalDetectMode.BridgeInterface, bridge);
            default:
                throw new UsageException($"--detect-local-mode: '{mode}' is not ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface");
        }
    }

    private static TimeSpan Duration(ParseResult result, Option<string> option)
    {
        var text = result.GetValue(option)!;
        if (!GoDuration.TryParse(text, out var duration) || duration < TimeSpan.Zero)
            throw new UsageException($"{option.Name}: '{text}' is not a duration such as 500ms, 1s or 1m30s");
        return duration;
    }

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
