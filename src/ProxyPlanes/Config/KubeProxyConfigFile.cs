using System.Globalization;
using System.Net;
using ProxyPlanes.Backends.Ipvs;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;
using ProxyPlanes.Web;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace ProxyPlanes.Config;

/// <summary>
/// Reads kube-proxy's config file (a <c>KubeProxyConfiguration</c>, kubeproxy.config.k8s.io/v1alpha1,
/// YAML or JSON, as in the kube-proxy ConfigMap's <c>config.conf</c>) into a <see cref="KubeProxyConfig"/>.
/// <list type="bullet">
/// <item>Fields ProxyPlanes uses are validated, each error naming the file, line and field.</item>
/// <item>Other kube-proxy fields are accepted (so kubeadm's full ConfigMap loads) and listed in
/// <see cref="KubeProxyConfig.IgnoredFields"/> when set to something other than empty/zero/false.</item>
/// <item>A field kube-proxy does not have is an error (<c>unknown field 'iptables.foo'</c>), as with
/// kube-proxy's strict decoding: a typo must not silently fall back to a default.</item>
/// </list>
/// As in kube-proxy, <c>""</c>, <c>0s</c> and <c>null</c> mean "the default" (except in <c>conntrack</c>,
/// where an explicit 0 means "leave the node's value alone").
/// </summary>
public static class KubeProxyConfigFile
{
    private const int DefaultMetricsPort = 10249;
    private const int DefaultHealthzPort = 10256;

    /// <summary>Sections (mappings) whose fields are listed below by dotted name.</summary>
    private static readonly HashSet<string> Sections = ["clientConnection", "iptables", "ipvs", "nftables", "conntrack", "detectLocal"];

    /// <summary>
    /// kube-proxy v1alpha1 fields ProxyPlanes does not act on. Subtrees (logging, featureGates,
    /// winkernel) are taken whole. <c>iptables.localhostNodePorts</c>: node ports are never served on
    /// loopback here. (Every <c>ipvs</c> field is read: the IPVS mode applies them.)
    /// </summary>
    private static readonly HashSet<string> Ignored =
    [
        "bindAddress", "bindAddressHardFail", "configSyncPeriod", "enableProfiling", "featureGates", "logging",
        "oomScoreAdj", "portRange", "showHiddenMetricsForVersion", "winkernel", "windowsRunAsService",
        "clientConnection.acceptContentTypes", "clientConnection.contentType", "clientConnection.qps", "clientConnection.burst",
        "iptables.localhostNodePorts",
    ];

    /// <summary>
    /// The largest IPVS timeout every kernel takes: the kernel refuses more than INT_MAX jiffies, and
    /// HZ is at most 1000 (2,147,483 s, about 24.8 days).
    /// </summary>
    public static readonly TimeSpan MaxIpvsTimeout = TimeSpan.FromSeconds(int.MaxValue / 1000);

    /// <summary>Reads and parses a config file; errors are <see cref="ConfigFileException"/>s.</summary>
    public static KubeProxyConfig Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigFileException(path, 0, $"cannot be read: {e.Message}");
        }
        return Parse(text, path);
    }

    /// <summary>Parses config text; <paramref name="file"/> names it in messages.</summary>
    public static KubeProxyConfig Parse(string text, string file = "<config>")
    {
        ArgumentNullException.ThrowIfNull(text);
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new ConfigFileException(file, (int)e.Start.Line, Sentence(e.Message));
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or IndexOutOfRangeException)
        {
            // YamlDotNet's scanner throws these on some malformed input (an unclosed '[' or '{').
            throw new ConfigFileException(file, 0, "is not valid YAML or JSON");
        }

        var documents = stream.Documents.Where(d => !IsNull(d.RootNode)).ToList();
        if (documents.Count == 0) throw new ConfigFileException(file, 0, $"is empty; expected a {KubeProxyConfig.Kind} ({KubeProxyConfig.ApiVersion})");
        if (documents.Count > 1)
            throw new ConfigFileException(file, Line(documents[1].RootNode), $"holds {documents.Count} YAML documents; expected one {KubeProxyConfig.Kind}");
        if (documents[0].RootNode is not YamlMappingNode root)
            throw new ConfigFileException(file, Line(documents[0].RootNode), $"expected a {KubeProxyConfig.Kind} mapping");
        return new Reader(file).Read(root);
    }

    private sealed class Reader(string file)
    {
        private readonly List<string> _ignored = [];
        private KubeProxyConfig _config = new() { File = file };
        private ConntrackSettings _conntrack = ConntrackSettings.KubeProxyDefaults;
        private ConfigValue<TimeSpan>? _syncTop, _minSyncTop;
        private readonly Dictionary<string, ModeSection> _sections = new()
        {
            ["iptables"] = ModeSection.Empty, ["ipvs"] = ModeSection.Empty, ["nftables"] = ModeSection.Empty,
        };

        public KubeProxyConfig Read(YamlMappingNode root)
        {
            CheckType(root, "apiVersion", KubeProxyConfig.ApiVersion);
            CheckType(root, "kind", KubeProxyConfig.Kind);
            Walk(root, "");
            foreach (var section in _sections.Values)
            {
                Agree(_syncTop, section.SyncPeriod);
                Agree(_minSyncTop, section.MinSyncPeriod);
            }
            return _config with
            {
                SyncPeriod = _syncTop,
                MinSyncPeriod = _minSyncTop,
                Iptables = _sections["iptables"],
                Ipvs = _sections["ipvs"],
                Nftables = _sections["nftables"],
                Conntrack = _conntrack,
                IgnoredFields = new EquatableArray<string>(_ignored),
            };
        }

        private void CheckType(YamlMappingNode root, string field, string expected)
        {
            var entry = root.Children.FirstOrDefault(kv => kv.Key is YamlScalarNode { Value: var key } && key == field);
            if (entry.Key is null)
                throw new ConfigFileException(file, Line(root), $"{field} is missing; a kube-proxy config file starts with apiVersion: {KubeProxyConfig.ApiVersion} and kind: {KubeProxyConfig.Kind}");
            var value = Text(entry.Value, field);
            if (value != expected)
                throw new ConfigFileException(file, Line(entry.Key), field == "kind"
                    ? $"kind: '{value}' is not {KubeProxyConfig.Kind}"
                    : $"apiVersion: '{value}' is not supported; use {KubeProxyConfig.ApiVersion}");
        }

        /// <summary>Reads one mapping level; <paramref name="prefix"/> is "" or "section.".</summary>
        private void Walk(YamlMappingNode map, string prefix)
        {
            foreach (var (keyNode, value) in map.Children)
            {
                if (keyNode is not YamlScalarNode { Value: { } key })
                    throw new ConfigFileException(file, Line(keyNode), "mapping keys must be plain names");
                var field = prefix + key;
                var line = Line(keyNode);
                if (prefix.Length == 0 && key is "apiVersion" or "kind") continue;
                if (prefix.Length == 0 && Sections.Contains(key))
                {
                    if (IsNull(value)) continue;
                    if (value is not YamlMappingNode section) throw Invalid(line, field, "expected a mapping of fields");
                    Walk(section, field + ".");
                }
                else if (Ignored.Contains(field))
                {
                    if (!IsEmptyish(value)) _ignored.Add(field);
                }
                else
                {
                    ReadField(field, value, line);
                }
            }
        }

        private void ReadField(string field, YamlNode node, int line)
        {
            switch (field)
            {
                case "mode":
                    if (String(node, field, line) is { } mode)
                    {
                        if (!Modes.Known.Contains(mode)) throw Invalid(line, field, $"'{mode}' is not a mode; use one of {string.Join(", ", Modes.Known)}");
                        _config = _config with { Mode = At(mode, line, field) };
                    }
                    break;
                case "clusterCIDR":
                    if (String(node, field, line) is { } cidrs)
                    {
                        var prefixes = Prefixes(cidrs.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), field, line);
                        if (prefixes.GroupBy(p => p.Family).Any(g => g.Count() > 1)) throw Invalid(line, field, "give at most one CIDR per IP family");
                        _config = _config with { ClusterCidrs = At(prefixes, line, field) };
                    }
                    break;
                case "hostnameOverride":
                    if (String(node, field, line) is { } host) _config = _config with { HostnameOverride = At(host, line, field) };
                    break;
                case "metricsBindAddress":
                    if (String(node, field, line) is { } metrics) _config = _config with { MetricsBindAddress = At(BindAddress(metrics, DefaultMetricsPort, field, line), line, field) };
                    break;
                case "healthzBindAddress":
                    if (String(node, field, line) is { } healthz) _config = _config with { HealthzBindAddress = At(BindAddress(healthz, DefaultHealthzPort, field, line), line, field) };
                    break;
                case "syncPeriod":
                    _syncTop = Period(node, field, line);
                    break;
                case "minSyncPeriod":
                    _minSyncTop = Period(node, field, line);
                    break;
                case "iptables.syncPeriod" or "ipvs.syncPeriod" or "nftables.syncPeriod":
                    Section(field, s => s with { SyncPeriod = Period(node, field, line) });
                    break;
                case "iptables.minSyncPeriod" or "ipvs.minSyncPeriod" or "nftables.minSyncPeriod":
                    Section(field, s => s with { MinSyncPeriod = Period(node, field, line) });
                    break;
                case "iptables.masqueradeAll" or "nftables.masqueradeAll":
                    Section(field, s => s with { MasqueradeAll = Bool(node, field, line) is { } all ? At(all, line, field) : null });
                    break;
                case "iptables.masqueradeBit" or "nftables.masqueradeBit":
                    // Packets are marked with bit 14, kube-proxy's default; another bit is not wired up.
                    if (Int(node, field, line) is { } bit && bit != 14)
                        throw Invalid(line, field, bit is < 0 or > 31 ? $"{bit} is not a bit number from 0 to 31" : $"{bit} is not supported; proxyplanes uses kube-proxy's default, 14");
                    break;
                case "ipvs.scheduler":
                    if (String(node, field, line) is { } scheduler)
                    {
                        if (!IpvsSchedulers.Known.Contains(scheduler))
                            throw Invalid(line, field, $"'{scheduler}' is not an IPVS scheduler; use one of {string.Join(", ", IpvsSchedulers.Known)}");
                        _config = _config with { IpvsScheduler = At(scheduler, line, field) };
                    }
                    break;
                case "ipvs.excludeCIDRs":
                    if (IsNull(node)) break;
                    if (node is not YamlSequenceNode excluded) throw Invalid(line, field, "expected a list of CIDRs such as 10.96.100.0/24");
                    var excludedCidrs = new List<IpPrefix>();
                    foreach (var item in excluded.Children) excludedCidrs.AddRange(Prefixes([Text(item, field)], field, Line(item)));
                    if (excludedCidrs.Count > 0) _config = _config with { IpvsExcludeCidrs = At(new EquatableArray<IpPrefix>(excludedCidrs), line, field) };
                    break;
                case "ipvs.strictARP":
                    if (Bool(node, field, line) is { } strictArp) _config = _config with { IpvsStrictArp = At(strictArp, line, field) };
                    break;
                case "ipvs.tcpTimeout":
                    _config = _config with { IpvsTcpTimeout = IpvsTimeout(node, field, line) };
                    break;
                case "ipvs.tcpFinTimeout":
                    _config = _config with { IpvsTcpFinTimeout = IpvsTimeout(node, field, line) };
                    break;
                case "ipvs.udpTimeout":
                    _config = _config with { IpvsUdpTimeout = IpvsTimeout(node, field, line) };
                    break;
                case "nodePortAddresses":
                    if (IsNull(node)) break;
                    if (node is not YamlSequenceNode list) throw Invalid(line, field, $"expected a list of CIDRs, or [{NodePortAddressSetting.PrimaryValue}]");
                    var items = list.Children;
                    var setting = NodePortAddressSetting.Parse(items.Select(item => Text(item, field)).ToList(), (i, problem) => Invalid(Line(items[i]), field, problem));
                    // An empty list is kube-proxy's "default": the flag's value applies.
                    if (setting != NodePortAddressSetting.All) _config = _config with { NodePortAddresses = At(setting, line, field) };
                    break;
                case "detectLocalMode":
                    if (String(node, field, line) is { } detect)
                    {
                        var parsed = ProxyFlags.DetectLocalModeNamed(detect);
                        if (parsed is null) throw Invalid(line, field, $"'{detect}' is not ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface");
                        _config = _config with { DetectLocalMode = At(parsed.Value, line, field) };
                    }
                    break;
                case "detectLocal.interfaceNamePrefix":
                    if (String(node, field, line) is { } prefix)
                    {
                        if (!ProxyFlags.ValidInterfaceName(prefix)) throw Invalid(line, field, $"'{prefix}' is not an interface name prefix such as veth");
                        _config = _config with { InterfaceNamePrefix = At(prefix, line, field) };
                    }
                    break;
                case "detectLocal.bridgeInterface":
                    if (String(node, field, line) is { } bridge)
                    {
                        if (!ProxyFlags.ValidInterfaceName(bridge)) throw Invalid(line, field, $"'{bridge}' is not an interface name such as cbr0");
                        _config = _config with { BridgeInterface = At(bridge, line, field) };
                    }
                    break;
                // conntrack: null keeps kube-proxy's default; an explicit 0 means "leave the node's value".
                case "conntrack.maxPerCore":
                    if (Count(node, field, line) is { } maxPerCore) _conntrack = _conntrack with { MaxPerCore = maxPerCore };
                    break;
                case "conntrack.min":
                    if (Count(node, field, line) is { } min) _conntrack = _conntrack with { Min = min };
                    break;
                case "conntrack.tcpEstablishedTimeout":
                    if (Duration(node, field, line) is { } established) _conntrack = _conntrack with { TcpEstablishedTimeout = established };
                    break;
                case "conntrack.tcpCloseWaitTimeout":
                    if (Duration(node, field, line) is { } closeWait) _conntrack = _conntrack with { TcpCloseWaitTimeout = closeWait };
                    break;
                case "conntrack.udpTimeout":
                    if (Duration(node, field, line) is { } udp) _conntrack = _conntrack with { UdpTimeout = udp };
                    break;
                case "conntrack.udpStreamTimeout":
                    if (Duration(node, field, line) is { } udpStream) _conntrack = _conntrack with { UdpStreamTimeout = udpStream };
                    break;
                case "conntrack.tcpBeLiberal":
                    if (Bool(node, field, line) is { } liberal) _conntrack = _conntrack with { TcpBeLiberal = liberal };
                    break;
                case "clientConnection.kubeconfig":
                    if (String(node, field, line) is { } kubeconfig) _config = _config with { Kubeconfig = At(kubeconfig, line, field) };
                    break;
                default:
                    throw new ConfigFileException(file, line, $"unknown field '{field}'");
            }
        }

        private void Section(string field, Func<ModeSection, ModeSection> update)
        {
            var name = field[..field.IndexOf('.')];
            _sections[name] = update(_sections[name]);
        }

        /// <summary>The top-level syncPeriod (newer kube-proxy) and a mode's own may both be given only if they agree.</summary>
        private void Agree(ConfigValue<TimeSpan>? top, ConfigValue<TimeSpan>? mode)
        {
            if (top is not null && mode is not null && top.Value != mode.Value)
                throw Invalid(mode.Line, mode.Field,
                    $"{GoDuration.Format(mode.Value)} disagrees with {top.Field} ({GoDuration.Format(top.Value)}, line {top.Line}); give one");
        }

        private ConfigValue<T> At<T>(T value, int line, string field) => new(value, file, line, field);

        private ConfigFileException Invalid(int line, string field, string detail) => new(file, line, $"{field}: {detail}");

        /// <summary>A string field; null when null or "" (kube-proxy's "default").</summary>
        private string? String(YamlNode node, string field, int line)
        {
            if (IsNull(node)) return null;
            var text = Text(node, field, line);
            return text.Length == 0 ? null : text;
        }

        private string Text(YamlNode node, string field, int? line = null) => node switch
        {
            YamlScalarNode { Value: var v } => v ?? "",
            YamlSequenceNode => throw Invalid(line ?? Line(node), field, "expected a single value, not a list"),
            _ => throw Invalid(line ?? Line(node), field, "expected a single value, not a mapping"),
        };

        private bool? Bool(YamlNode node, string field, int line)
        {
            if (IsNull(node)) return null;
            return Text(node, field, line) switch
            {
                "true" or "True" or "TRUE" => true,
                "false" or "False" or "FALSE" => false,
                var other => throw Invalid(line, field, $"'{other}' is not true or false"),
            };
        }

        private int? Int(YamlNode node, string field, int line)
        {
            if (IsNull(node)) return null;
            var text = Text(node, field, line);
            return int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value)
                ? value
                : throw Invalid(line, field, $"'{text}' is not a whole number");
        }

        /// <summary>A count that must not be negative (conntrack.maxPerCore, conntrack.min).</summary>
        private int? Count(YamlNode node, string field, int line)
        {
            var value = Int(node, field, line);
            return value < 0 ? throw Invalid(line, field, $"{value} must not be negative") : value;
        }

        private TimeSpan? Duration(YamlNode node, string field, int line)
        {
            if (IsNull(node)) return null;
            var text = Text(node, field, line);
            if (text.TrimStart().StartsWith('-')) throw Invalid(line, field, $"'{text}' must not be negative");
            return GoDuration.TryParse(text, out var duration)
                ? duration
                : throw Invalid(line, field, $"'{text}' is not a duration such as 500ms, 1s or 1m30s");
        }

        /// <summary>A sync period; 0 (kube-proxy's "default") is left unset, at most 24h.</summary>
        private ConfigValue<TimeSpan>? Period(YamlNode node, string field, int line)
        {
            if (Duration(node, field, line) is not { } period || period == TimeSpan.Zero) return null;
            if (period > TimeSpan.FromDays(1)) throw Invalid(line, field, $"'{Text(node, field, line)}' is more than 24h");
            return At(period, line, field);
        }

        /// <summary>An IPVS timeout; 0 (keep the kernel's) is left unset, at most <see cref="MaxIpvsTimeout"/>.</summary>
        private ConfigValue<TimeSpan>? IpvsTimeout(YamlNode node, string field, int line)
        {
            if (Duration(node, field, line) is not { } timeout || timeout == TimeSpan.Zero) return null;
            if (timeout > MaxIpvsTimeout) throw Invalid(line, field, $"'{Text(node, field, line)}' is more than IPVS takes ({GoDuration.Format(MaxIpvsTimeout)})");
            return At(timeout, line, field);
        }

        private EquatableArray<IpPrefix> Prefixes(IEnumerable<string> texts, string field, int line)
        {
            var prefixes = new List<IpPrefix>();
            foreach (var text in texts)
            {
                if (!text.Contains('/') || !IpPrefix.TryParse(text, out var prefix))
                    throw Invalid(line, field, $"'{text}' is not a CIDR such as 10.244.0.0/16");
                prefixes.Add(prefix);
            }
            return new EquatableArray<IpPrefix>(prefixes);
        }

        /// <summary>address:port; a bare IP gets the default port, as kube-proxy's config defaulting does.</summary>
        private IPEndPoint BindAddress(string text, int defaultPort, string field, int line)
        {
            if (IpPrefix.TryParseAddress(text, out var address)) return new IPEndPoint(address, defaultPort);
            try
            {
                return ProxyHttpEndpoints.ParseBindAddress(text, field)!;
            }
            catch (FormatException e)
            {
                throw new ConfigFileException(file, line, e.Message);
            }
        }
    }

    private static int Line(YamlNode node) => (int)node.Start.Line;

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" }
        && node.Tag.IsEmpty;

    /// <summary>null, "", 0, 0s, false, or a collection of only such values: a field left at its default.</summary>
    private static bool IsEmptyish(YamlNode node) => node switch
    {
        YamlScalarNode { Value: var v } => IsNull(node) || v is "" or "0" or "0s" or "false" or "False" or "FALSE",
        YamlSequenceNode s => s.Children.All(IsEmptyish),
        YamlMappingNode m => m.Children.Values.All(IsEmptyish),
        _ => false,
    };

    private static string Sentence(string message)
    {
        var m = message.Trim().TrimEnd('.');
        return m.Length > 1 && char.IsUpper(m[0]) && !char.IsUpper(m[1]) ? char.ToLowerInvariant(m[0]) + m[1..] : m;
    }
}
