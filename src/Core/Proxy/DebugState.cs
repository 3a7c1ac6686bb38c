using System.Buffers;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// The last sync that programmed the kernel, published as one value (the web server reads it from
/// another thread): the state it programmed, which successful sync it was (1, 2, ...), when it
/// completed, and the mode and families that programmed it.
/// </summary>
public sealed record AppliedSync(DesiredState State, long Generation, DateTimeOffset CompletedAt, string Mode, IReadOnlyList<IpFamily> Families);

/// <summary>The kinds of frontend a service port has, named as <c>proxyplanes explain</c> names them.</summary>
public enum FrontendKind { ClusterIP, NodePort, ExternalIP, LoadBalancerIP }

/// <summary>
/// One frontend the daemon wants programmed: a packet to <see cref="Destination"/>:<see cref="Port"/>
/// from off the cluster meets <see cref="Verdict"/> (spread over <see cref="Endpoints"/> when it
/// forwards). Load-balancer IPs with <see cref="SourceRanges"/> give that verdict to the sources the
/// ranges admit only.
/// </summary>
public sealed record DesiredFrontend(
    Protocol Protocol,
    IPAddress Destination,
    int Port,
    string ServicePort,
    FrontendKind Kind,
    TrafficAction Verdict,
    IReadOnlyList<string> Endpoints)
{
    public IReadOnlyList<string> SourceRanges { get; init; } = [];

    public IpFamily Family => NodeAddresses.FamilyOf(Destination);

    /// <summary>The frontend as explain prints it: <c>tcp 10.96.0.10:80</c>, <c>tcp [fd00::10]:80</c>.</summary>
    public string Name => DebugState.FrontendName(Protocol, Destination, Port);
}

/// <summary>The daemon's <c>/debug/state</c> document: the frontends it wants, as of one successful sync.</summary>
public sealed record DebugStateDocument(string Mode, string Node, long Generation, DateTimeOffset SyncedAt, IReadOnlyList<DesiredFrontend> Frontends);

/// <summary>
/// The daemon's desired state, per frontend, as <c>/debug/state</c> serves it and
/// <c>proxyplanes explain --all</c> reads it: computed from the verdicts Core decided
/// (<see cref="ServicePortVerdict"/>), never from a data plane, so explain can set it against what
/// the kernel holds. Built on request from the last applied state; nothing is kept per sync.
/// </summary>
public static class DebugState
{
    /// <summary>
    /// Every frontend of <paramref name="applied"/>, sorted as explain sorts its list. A service port
    /// is in a family when it has a cluster IP of that family and the mode programs that family. Node
    /// ports are listed at each address that accepts them: --nodeport-addresses as resolved at the sync,
    /// else every local address of the family but loopback (read now, only when a node port needs them).
    /// </summary>
    public static IReadOnlyList<DesiredFrontend> Frontends(AppliedSync applied, Func<IEnumerable<IPAddress>> localAddresses)
    {
        var network = applied.State.Network;
        var nodeAddresses = new Lazy<IPAddress[]>(() => network.NodePortAddresses is { } chosen
            ? [.. chosen]
            : [.. localAddresses().Where(a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal).Distinct()]);
        var frontends = new List<DesiredFrontend>();
        foreach (var port in applied.State.ServicePorts.Values)
        {
            var info = port.Info;
            foreach (var family in applied.Families)
            {
                var clusterIP = info.ClusterIPs.FirstOrDefault(ip => NodeAddresses.FamilyOf(ip) == family);
                if (clusterIP is null) continue; // not a service of this family
                var verdict = port.VerdictFor(family);
                DesiredFrontend Frontend(IPAddress destination, int number, FrontendKind kind, TrafficVerdict traffic) =>
                    new(info.Protocol, destination, number, info.Name.ToString(), kind, traffic.Action,
                        traffic.IsForward ? [.. traffic.Endpoints.Select(e => e.Endpoint).Distinct().Order(StringComparer.Ordinal)] : []);

                frontends.Add(Frontend(clusterIP, info.Port, FrontendKind.ClusterIP, verdict.InternalTraffic));
                foreach (var ip in info.ExternalIPs.Where(ip => NodeAddresses.FamilyOf(ip) == family))
                    frontends.Add(Frontend(ip, info.Port, FrontendKind.ExternalIP, verdict.ExternalTraffic));
                foreach (var ip in info.LoadBalancerIPs.Where(ip => NodeAddresses.FamilyOf(ip) == family))
                    frontends.Add(Frontend(ip, info.Port, FrontendKind.LoadBalancerIP, verdict.ExternalTraffic) with
                    {
                        SourceRanges = [.. verdict.SourceRanges.Select(r => r.ToString())],
                    });
                if (info.NodePort != 0)
                    foreach (var address in nodeAddresses.Value.Where(a => NodeAddresses.FamilyOf(a) == family))
                        frontends.Add(Frontend(address, info.NodePort, FrontendKind.NodePort, verdict.ExternalTraffic));
            }
        }
        return [.. frontends.OrderBy(f => f.Name, StringComparer.Ordinal).ThenBy(f => f.Kind)];
    }

    /// <summary>The JSON kind names: explain's (<c>clusterIP</c>, <c>nodePort</c>, <c>externalIP</c>, <c>loadBalancerIP</c>).</summary>
    public static string KindName(FrontendKind kind) => kind switch
    {
        FrontendKind.ClusterIP => "clusterIP",
        FrontendKind.NodePort => "nodePort",
        FrontendKind.ExternalIP => "externalIP",
        _ => "loadBalancerIP",
    };

    public static string VerdictName(TrafficAction action) => action.ToString().ToLowerInvariant();

    public static string FrontendName(Protocol protocol, IPAddress destination, int port) =>
        $"{protocol.ToString().ToLowerInvariant()} {Endpoint(destination, port)}";

    public static string Endpoint(IPAddress address, int port) =>
        address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";

    /// <summary>
    /// The document: <c>{"mode","node","generation","syncedAt","frontends":[{"protocol","destination",
    /// "servicePort","frontend","verdict","endpoints","sourceRanges"}]}</c>. <c>frontend</c> is the kind,
    /// <c>verdict</c> is <c>forward</c>, <c>reject</c> or <c>drop</c> for a packet from off the cluster.
    /// </summary>
    public static string Write(AppliedSync applied, IReadOnlyList<DesiredFrontend> frontends)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("mode", applied.Mode);
            json.WriteString("node", applied.State.Network.NodeName);
            json.WriteNumber("generation", applied.Generation);
            json.WriteString("syncedAt", Time(applied.CompletedAt));
            json.WriteStartArray("frontends");
            foreach (var frontend in frontends)
            {
                json.WriteStartObject();
                json.WriteString("protocol", frontend.Protocol.ToString().ToLowerInvariant());
                json.WriteString("destination", Endpoint(frontend.Destination, frontend.Port));
                json.WriteString("servicePort", frontend.ServicePort);
                json.WriteString("frontend", KindName(frontend.Kind));
                json.WriteString("verdict", VerdictName(frontend.Verdict));
                Strings(json, "endpoints", frontend.Endpoints);
                Strings(json, "sourceRanges", frontend.SourceRanges);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    /// <summary>UTC, to the millisecond: <c>2024-01-01T00:00:00.000Z</c>.</summary>
    public static string Time(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    private static void Strings(Utf8JsonWriter json, string name, IEnumerable<string> values)
    {
        json.WriteStartArray(name);
        foreach (var value in values) json.WriteStringValue(value);
        json.WriteEndArray();
    }

    /// <summary>Reads a document <see cref="Write"/> wrote; a <see cref="FormatException"/> names what is wrong.</summary>
    public static DebugStateDocument Parse(string text)
    {
        try
        {
            using var document = JsonDocument.Parse(text);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new FormatException("not a JSON object");
            var frontends = Property(root, "frontends", JsonValueKind.Array).EnumerateArray().Select(ParseFrontend).ToList();
            var syncedAt = Property(root, "syncedAt", JsonValueKind.String).GetString()!;
            return new DebugStateDocument(
                Property(root, "mode", JsonValueKind.String).GetString()!,
                Property(root, "node", JsonValueKind.String).GetString()!,
                Property(root, "generation", JsonValueKind.Number).GetInt64(),
                DateTimeOffset.TryParse(syncedAt, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time) ? time : throw new FormatException($"syncedAt '{syncedAt}' is not a time"),
                frontends);
        }
        catch (JsonException e)
        {
            throw new FormatException($"not JSON: {e.Message}");
        }
        catch (InvalidOperationException e)
        {
            throw new FormatException(e.Message); // a value of another JSON kind than expected
        }
    }

    private static DesiredFrontend ParseFrontend(JsonElement element)
    {
        string Text(string name) => Property(element, name, JsonValueKind.String).GetString()!;
        string[] List(string name) => element.TryGetProperty(name, out var list) && list.ValueKind == JsonValueKind.Array
            ? [.. list.EnumerateArray().Select(e => e.GetString() ?? throw new FormatException($"{name} holds a non-string"))]
            : [];

        var protocol = Text("protocol") switch
        {
            "tcp" => Protocol.TCP,
            "udp" => Protocol.UDP,
            "sctp" => Protocol.SCTP,
            var other => throw new FormatException($"protocol '{other}' is not tcp, udp or sctp"),
        };
        var destination = Text("destination");
        var (address, port) = ParseEndpoint(destination) ?? throw new FormatException($"destination '{destination}' is not IP:PORT");
        var kindName = Text("frontend");
        var kind = Enum.GetValues<FrontendKind>().Cast<FrontendKind?>().FirstOrDefault(k => KindName(k!.Value) == kindName)
            ?? throw new FormatException($"frontend '{kindName}' is not clusterIP, nodePort, externalIP or loadBalancerIP");
        var verdictName = Text("verdict");
        var verdict = Enum.GetValues<TrafficAction>().Cast<TrafficAction?>().FirstOrDefault(a => VerdictName(a!.Value) == verdictName)
            ?? throw new FormatException($"verdict '{verdictName}' is not forward, reject or drop");
        return new DesiredFrontend(protocol, address, port, Text("servicePort"), kind, verdict, List("endpoints")) { SourceRanges = List("sourceRanges") };
    }

    private static JsonElement Property(JsonElement element, string name, JsonValueKind kind) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == kind
            ? value
            : throw new FormatException($"no {kind.ToString().ToLowerInvariant()} '{name}'");

    /// <summary>IP:PORT or [IPv6]:PORT; null when it is neither.</summary>
    public static (IPAddress Address, int Port)? ParseEndpoint(string text)
    {
        var colon = text.LastIndexOf(':');
        if (colon <= 0) return null;
        var host = text[..colon];
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        else if (host.Contains(':')) return null;
        if (!IpPrefix.TryParseAddress(host, out var address)) return null;
        if (!int.TryParse(text[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535) return null;
        return (address, port);
    }
}
