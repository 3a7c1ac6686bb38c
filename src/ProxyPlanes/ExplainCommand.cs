using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes;

/// <summary>
/// <c>proxyplanes explain PROTO IP:PORT [--from IP] [--mode MODE] [-o text|json]</c> and
/// <c>proxyplanes explain --all [--state-url URL]</c>: what the kernel does with a packet, read from the
/// kernel's state for the mode (never from a daemon's memory); with --all, also where the kernel
/// differs from a running daemon's desired state (its /debug/state, <see cref="DaemonState"/>).
/// </summary>
public static class ExplainCommand
{
    public static async Task<int> RunAsync(string? protocol, string? address, string? from, string? mode, string output, bool all, string? stateUrl, TextWriter writer, CancellationToken cancellationToken)
    {
        if (output is not ("text" or "json")) throw new UsageException($"-o {output}: use text or json");
        var question = all ? null : ParseQuestion(protocol, address, from);
        if (all && (protocol is not null || address is not null || from is not null))
            throw new UsageException("explain --all takes no packet: give either --all or PROTO IP:PORT");
        if (!all && stateUrl is not null) throw new UsageException("--state-url is for explain --all (it compares every frontend with the daemon's desired state)");
        if (!string.IsNullOrEmpty(stateUrl)) DaemonState.ParseUrl(stateUrl);

        var (name, explainer) = await PickAsync(mode, cancellationToken);
        if (question is not null)
        {
            var fate = await explainer.ExplainAsync(question, cancellationToken);
            writer.Write(output == "json" ? Json(fate) + "\n" : Text(name, question, fate));
        }
        else
        {
            var list = await explainer.ListAsync(cancellationToken);
            var comparison = await DaemonState.CompareAsync(stateUrl, name, list, cancellationToken);
            writer.Write(output == "json" ? JsonList(name, list, comparison) + "\n" : TextList(name, list, comparison));
        }
        return 0;
    }

    /// <summary>PROTO and IP:PORT ([IPv6]:PORT), and --from; a <see cref="UsageException"/> naming what is wrong.</summary>
    public static PacketQuestion ParseQuestion(string? protocol, string? address, string? from)
    {
        if (protocol is null || address is null) throw new UsageException("explain needs a packet: PROTO IP:PORT (for example: explain tcp 10.96.0.10:80), or --all");
        var proto = protocol.ToLowerInvariant() switch
        {
            "tcp" => Protocol.TCP,
            "udp" => Protocol.UDP,
            "sctp" => Protocol.SCTP,
            _ => throw new UsageException($"'{protocol}' is not a protocol; use tcp, udp or sctp"),
        };
        string host, port;
        if (address.StartsWith('['))
        {
            var close = address.IndexOf("]:", StringComparison.Ordinal);
            if (close < 0) throw new UsageException($"'{address}' is not [IPv6]:PORT");
            host = address[1..close];
            port = address[(close + 2)..];
        }
        else
        {
            var colon = address.LastIndexOf(':');
            if (colon < 0 || address.IndexOf(':') != colon) throw new UsageException($"'{address}' is not IP:PORT (write an IPv6 address as [IP]:PORT)");
            host = address[..colon];
            port = address[(colon + 1)..];
        }
        if (!IpPrefix.TryParseAddress(host, out var ip)) throw new UsageException($"'{host}' in '{address}' is not an IP address");
        if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number is < 1 or > 65535)
            throw new UsageException($"'{port}' in '{address}' is not a port (1-65535)");
        IPAddress? source = null;
        if (from is not null && !IpPrefix.TryParseAddress(from, out source)) throw new UsageException($"--from {from}: not an IP address");
        if (source is not null && source.AddressFamily != ip.AddressFamily) throw new UsageException($"--from {from} and {host} are of different IP families");
        return new PacketQuestion(proto, ip, number, source);
    }

    /// <summary>The mode named, or the one whose state this node's kernel holds.</summary>
    private static async Task<(string Name, IKernelExplainer Explainer)> PickAsync(string? mode, CancellationToken cancellationToken)
    {
        var explained = Modes.Registry.Built.Where(m => m.Explainer is not null).ToList();
        var names = string.Join(", ", explained.Select(m => m.Name));
        if (mode is not null)
        {
            var descriptor = Modes.Require(mode);
            return descriptor.Explainer is { } explainer
                ? (descriptor.Name, explainer)
                : throw new UsageException($"explain cannot read --mode={mode} yet; it reads {names}");
        }
        foreach (var candidate in explained)
            if (await candidate.Explainer!.HoldsStateAsync(cancellationToken))
                return (candidate.Name, candidate.Explainer);
        throw new ExplainException($"no state of {names} found in this node's kernel (is proxyplanes running here, in this network namespace? explain reads {names} so far; give --mode to ask anyway)");
    }

    private static readonly JsonWriterOptions Indented = new() { Indented = true };

    public static string Json(PacketFate fate)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, Indented)) WriteFate(json, fate, null);
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>
    /// <c>explain --all -o json</c>: <c>{"mode", "frontends": [per frontend: protocol, destination and the
    /// keys of <see cref="WriteFate"/>], "daemon": {"url", "compared", "generation", "syncedAt", "skipped"},
    /// "differences": [...] or null}</c>. <c>differences</c> is null when no comparison was made (then
    /// <c>daemon.skipped</c> says why), so an empty array always means "compared, and no difference".
    /// </summary>
    public static string JsonList(string mode, IReadOnlyList<FrontendFate> list, DaemonComparison comparison)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, Indented))
        {
            json.WriteStartObject();
            json.WriteString("mode", mode);
            json.WriteStartArray("frontends");
            foreach (var entry in list) WriteFate(json, entry.Fate, entry.Question);
            json.WriteEndArray();
            json.WriteStartObject("daemon");
            json.WriteString("url", comparison.Url);
            json.WriteBoolean("compared", comparison.Compared);
            if (comparison.Daemon is { } daemon)
            {
                json.WriteNumber("generation", daemon.Generation);
                json.WriteString("syncedAt", DebugState.Time(daemon.SyncedAt));
            }
            else
            {
                json.WriteNull("generation");
                json.WriteNull("syncedAt");
            }
            json.WriteString("skipped", comparison.SkippedBecause);
            json.WriteEndObject();
            if (comparison.Differences is { } differences)
            {
                json.WriteStartArray("differences");
                foreach (var difference in differences) WriteDifference(json, difference);
                json.WriteEndArray();
            }
            else json.WriteNull("differences");
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>One difference: the frontend, its kind (missing, extra, verdict, endpoints), what each side holds (null: nothing), and the text line.</summary>
    private static void WriteDifference(Utf8JsonWriter json, FrontendDifference difference)
    {
        json.WriteStartObject();
        json.WriteString("protocol", difference.Protocol.ToString().ToLowerInvariant());
        json.WriteString("destination", Endpoint(difference.Destination, difference.Port));
        json.WriteString("difference", difference.Kind.ToString().ToLowerInvariant());
        json.WriteString("servicePort", difference.ServicePort);
        json.WriteString("frontend", difference.Frontend);
        void Side(string name, string? verdict, IReadOnlyList<string> endpoints)
        {
            if (verdict is null) { json.WriteNull(name); return; }
            json.WriteStartObject(name);
            json.WriteString("verdict", verdict);
            json.WriteStartArray("endpoints");
            foreach (var endpoint in endpoints) json.WriteStringValue(endpoint);
            json.WriteEndArray();
            json.WriteEndObject();
        }
        Side("kernel", difference.KernelVerdict?.ToString().ToLowerInvariant(), difference.KernelEndpoints);
        Side("daemon", difference.DaemonVerdict is { } wanted ? DebugState.VerdictName(wanted) : null, difference.DaemonEndpoints);
        json.WriteString("text", difference.Text);
        json.WriteEndObject();
    }

    /// <summary>The keys the issue fixes: match, frontend, verdict, endpoints, masquerade, affinity, reason (and, in a list, the packet).</summary>
    private static void WriteFate(Utf8JsonWriter json, PacketFate fate, PacketQuestion? question)
    {
        json.WriteStartObject();
        if (question is not null)
        {
            json.WriteString("protocol", question.Protocol.ToString().ToLowerInvariant());
            json.WriteString("destination", Endpoint(question.Destination, question.Port));
        }
        json.WriteString("match", fate.Match);
        json.WriteString("frontend", fate.Frontend);
        json.WriteString("verdict", fate.Verdict.ToString().ToLowerInvariant());
        json.WriteStartArray("endpoints");
        foreach (var endpoint in fate.Endpoints) json.WriteStringValue(endpoint.Endpoint);
        json.WriteEndArray();
        json.WriteBoolean("masquerade", fate.Masquerade);
        json.WriteBoolean("affinity", fate.Affinity);
        json.WriteString("reason", fate.Reason);
        json.WriteEndObject();
    }

    public static string Text(string mode, PacketQuestion question, PacketFate fate)
    {
        var text = new StringBuilder();
        void Line(string key, string value) => text.Append(CultureInfo.InvariantCulture, $"{key,-11}{value}\n");
        Line("packet", $"{question}{(question.Source is null ? " from off the cluster" : "")} ({mode} mode)");
        Line("match", fate.Match is null ? "none" : $"{fate.Match} ({fate.Frontend})");
        Line("verdict", fate.Verdict.ToString().ToLowerInvariant());
        for (var i = 0; i < fate.Endpoints.Count; i++)
        {
            var e = fate.Endpoints[i];
            Line(i == 0 ? "endpoints" : "", string.Create(CultureInfo.InvariantCulture, $"{e.Endpoint,-24} {e.Share * 100,5:F1}%{(e.Masquerade ? "  masqueraded" : "")}"));
        }
        Line("masquerade", fate.Masquerade ? "yes" : "no");
        Line("affinity", fate.Affinity ? "yes (ClientIP)" : "no");
        Line("why", fate.Reason);
        for (var i = 0; i < fate.Steps.Count; i++) Line(i == 0 ? "rules" : "", fate.Steps[i]);
        return text.ToString();
    }

    /// <summary>The table, then one line per difference from the daemon (or one saying there is none, or why it was not compared).</summary>
    public static string TextList(string mode, IReadOnlyList<FrontendFate> list, DaemonComparison comparison) => TextTable(mode, list) + comparison switch
    {
        { Differences: { Count: 0 }, Daemon: { } daemon } => $"no difference from the daemon's desired state (sync {daemon.Generation} at {DebugState.Time(daemon.SyncedAt)})\n",
        { Differences: { } differences } => string.Concat(differences.Select(d => $"differs from the daemon: {d.Text}\n")),
        { Url: null } => "", // --state-url "": not asked for
        _ => $"comparison with the daemon skipped: {comparison.SkippedBecause}\n",
    };

    private static string TextTable(string mode, IReadOnlyList<FrontendFate> list)
    {
        if (list.Count == 0) return $"no frontends in the kernel ({mode} mode)\n";
        var rows = list.Select(e => new[]
        {
            $"{e.Question.Protocol.ToString().ToLowerInvariant()} {Endpoint(e.Question.Destination, e.Question.Port)}",
            e.Fate.Match ?? "-", e.Fate.Frontend ?? "-", e.Fate.Verdict.ToString().ToLowerInvariant(),
            e.Fate.Endpoints.Count == 0 ? e.Fate.Reason : string.Join(" ", e.Fate.Endpoints.Select(x => x.Endpoint)),
        }).Prepend(["frontend", "service port", "kind", "verdict", "endpoints / why"]).ToList();
        var widths = Enumerable.Range(0, 4).Select(i => rows.Max(r => r[i].Length)).ToArray();
        var text = new StringBuilder();
        foreach (var row in rows)
            text.Append(string.Join("  ", row.Take(4).Select((c, i) => c.PadRight(widths[i])))).Append("  ").Append(row[4]).Append('\n');
        return text.ToString();
    }

    private static string Endpoint(IPAddress address, int port) =>
        address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";
}
