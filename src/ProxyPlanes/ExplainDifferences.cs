using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes;

/// <summary>How the kernel and the daemon's desired state differ at one frontend.</summary>
public enum DifferenceKind
{
    /// <summary>The daemon wants the frontend; the kernel holds nothing for it.</summary>
    Missing,

    /// <summary>The kernel acts on the frontend (forwards, rejects, drops); the daemon wants nothing there.</summary>
    Extra,

    /// <summary>Both have it, with different verdicts.</summary>
    Verdict,

    /// <summary>Both forward, to different endpoint sets.</summary>
    Endpoints,
}

/// <summary>
/// One difference at one frontend (same protocol and destination). <see cref="KernelVerdict"/> is null
/// when the kernel holds nothing there, <see cref="DaemonVerdict"/> when the daemon wants nothing there.
/// </summary>
public sealed record FrontendDifference(
    DifferenceKind Kind,
    Protocol Protocol,
    IPAddress Destination,
    int Port,
    string? ServicePort,
    string? Frontend,
    PacketVerdict? KernelVerdict,
    IReadOnlyList<string> KernelEndpoints,
    TrafficAction? DaemonVerdict,
    IReadOnlyList<string> DaemonEndpoints)
{
    public string Name => DebugState.FrontendName(Protocol, Destination, Port);

    /// <summary>The line <c>explain --all</c> prints, after "differs from the daemon: ".</summary>
    public string Text => Kind switch
    {
        DifferenceKind.Missing => $"{Name} missing in the kernel, daemon wants {Wants(DaemonVerdict!.Value, DaemonEndpoints)} ({Label})",
        DifferenceKind.Extra => $"{Name} extra in the kernel: it {Does(KernelVerdict!.Value, KernelEndpoints)} ({Label}), daemon wants nothing there",
        _ => $"{Name} kernel {Does(KernelVerdict!.Value, KernelEndpoints)}, daemon wants "
            + (Kind == DifferenceKind.Endpoints ? string.Join(" ", DaemonEndpoints) : Wants(DaemonVerdict!.Value, DaemonEndpoints)),
    };

    /// <summary>The service port and kind, as far as either side names them.</summary>
    private string Label => ServicePort is null && Frontend is null ? "no service port named" : string.Join(" ", new[] { ServicePort, Frontend }.OfType<string>());

    private static string Does(PacketVerdict verdict, IReadOnlyList<string> endpoints) => verdict switch
    {
        PacketVerdict.Forward => endpoints.Count == 0 ? "forwards" : $"forwards to {string.Join(" ", endpoints)}",
        PacketVerdict.Reject => "rejects",
        PacketVerdict.Drop => "drops",
        _ => "passes (nothing of ours matches)",
    };

    private static string Wants(TrafficAction verdict, IReadOnlyList<string> endpoints) => verdict switch
    {
        TrafficAction.Forward => $"forward to {(endpoints.Count == 0 ? "no endpoint" : string.Join(" ", endpoints))}",
        TrafficAction.Reject => "reject",
        _ => "drop",
    };
}

/// <summary>
/// <c>explain --all</c>'s second witness: the frontends the kernel holds (read from the kernel) set
/// against the frontends a running daemon wants (its <c>/debug/state</c>), frontend by frontend.
/// </summary>
public static class ExplainDifferences
{
    /// <summary>
    /// The differences, in the kernel list's order, then the daemon's. Frontends are paired by protocol
    /// and destination. The kernel's list asks as a client off the cluster with no particular address,
    /// so the daemon's verdict is turned into what that client meets: a load-balancer IP whose source
    /// ranges admit only some sources drops it (unless it rejects everyone). A kernel frontend that
    /// passes the packet and that the daemon does not want is not "extra": nothing of ours acts there.
    /// The kernel's list names a node port at one address of the node per family; the daemon lists it
    /// at every address that accepts it, so the daemon's other addresses of that node port are not
    /// "missing" when the kernel's list asked about the node port at one address.
    /// </summary>
    public static IReadOnlyList<FrontendDifference> Compare(IReadOnlyList<FrontendFate> kernel, IReadOnlyList<DesiredFrontend> daemon)
    {
        var wanted = new Dictionary<string, DesiredFrontend>(StringComparer.Ordinal);
        foreach (var frontend in daemon) wanted.TryAdd(frontend.Name, frontend);
        var paired = new HashSet<string>(StringComparer.Ordinal);
        var differences = new List<FrontendDifference>();

        foreach (var entry in kernel)
        {
            var question = entry.Question;
            var name = DebugState.FrontendName(question.Protocol, question.Destination, question.Port);
            var fate = entry.Fate;
            var kernelEndpoints = fate.Verdict == PacketVerdict.Forward ? Sorted(fate.Endpoints.Select(e => e.Endpoint)) : [];
            FrontendDifference Difference(DifferenceKind kind, DesiredFrontend? want, TrafficAction? wantVerdict, IReadOnlyList<string> wantEndpoints) =>
                new(kind, question.Protocol, question.Destination, question.Port, want?.ServicePort ?? fate.Match, want is null ? fate.Frontend : DebugState.KindName(want.Kind),
                    fate.Verdict, kernelEndpoints, wantVerdict, wantEndpoints);

            if (!wanted.TryGetValue(name, out var want))
            {
                if (fate.Verdict != PacketVerdict.Pass) differences.Add(Difference(DifferenceKind.Extra, null, null, []));
                continue;
            }
            paired.Add(name);
            var (verdict, endpoints) = Expected(want);
            if (!SameVerdict(fate.Verdict, verdict)) differences.Add(Difference(DifferenceKind.Verdict, want, verdict, endpoints));
            else if (verdict == TrafficAction.Forward && !kernelEndpoints.SequenceEqual(endpoints, StringComparer.Ordinal))
                differences.Add(Difference(DifferenceKind.Endpoints, want, verdict, endpoints));
        }

        var nodePortsReported = new HashSet<(Protocol, int, IpFamily)>();
        foreach (var want in daemon)
        {
            if (paired.Contains(want.Name)) continue;
            if (want.Kind == FrontendKind.NodePort)
            {
                // One line per node port, and none when the kernel's list asked about it at another address.
                if (NodePortAskedElsewhere(want, kernel, wanted) || !nodePortsReported.Add((want.Protocol, want.Port, want.Family))) continue;
            }
            var (verdict, endpoints) = Expected(want);
            differences.Add(new FrontendDifference(DifferenceKind.Missing, want.Protocol, want.Destination, want.Port, want.ServicePort, DebugState.KindName(want.Kind),
                null, [], verdict, endpoints));
        }
        return differences;
    }

    /// <summary>What a client off the cluster with no particular address meets, by the daemon's wish.</summary>
    private static (TrafficAction Verdict, IReadOnlyList<string> Endpoints) Expected(DesiredFrontend want)
    {
        if (want.SourceRanges.Count > 0 && want.Verdict != TrafficAction.Reject) return (TrafficAction.Drop, []);
        return (want.Verdict, want.Verdict == TrafficAction.Forward ? Sorted(want.Endpoints) : []);
    }

    private static bool SameVerdict(PacketVerdict kernel, TrafficAction daemon) => (kernel, daemon) switch
    {
        (PacketVerdict.Forward, TrafficAction.Forward) or (PacketVerdict.Reject, TrafficAction.Reject) or (PacketVerdict.Drop, TrafficAction.Drop) => true,
        _ => false,
    };

    /// <summary>The kernel's list has this node port (protocol, port, family) at an address that is no other kind of frontend the daemon wants.</summary>
    private static bool NodePortAskedElsewhere(DesiredFrontend want, IReadOnlyList<FrontendFate> kernel, Dictionary<string, DesiredFrontend> wanted) =>
        kernel.Any(entry => entry.Question.Protocol == want.Protocol && entry.Question.Port == want.Port && entry.Question.Family == want.Family
            && (!wanted.TryGetValue(DebugState.FrontendName(entry.Question.Protocol, entry.Question.Destination, entry.Question.Port), out var other)
                || other.Kind == FrontendKind.NodePort));

    private static string[] Sorted(IEnumerable<string> endpoints) => [.. endpoints.Distinct().Order(StringComparer.Ordinal)];
}

/// <summary>What became of the comparison with the daemon: done (with its document and differences), or skipped and why.</summary>
public sealed record DaemonComparison(string? Url, DebugStateDocument? Daemon, IReadOnlyList<FrontendDifference>? Differences, string? SkippedBecause)
{
    public bool Compared => Differences is not null;

    public static DaemonComparison Disabled { get; } = new(null, null, null, "--state-url is empty");

    public static DaemonComparison Skipped(string url, string reason) => new(url, null, null, reason);
}

/// <summary>Fetches a daemon's <c>/debug/state</c> with a short timeout; never throws for an unreachable or unready daemon.</summary>
public static class DaemonState
{
    public const string DefaultUrl = "http://127.0.0.1:10249/debug/state";

    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(2);

    /// <summary>The URL of --state-url; a <see cref="UsageException"/> when it is not an http(s) URL.</summary>
    public static Uri ParseUrl(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new UsageException($"--state-url {url}: not an http:// URL (for example {DefaultUrl}; \"\" skips the comparison)");

    /// <summary>The document, or the one-line reason it could not be had.</summary>
    public static async Task<(DebugStateDocument? Document, string? Problem)> FetchAsync(Uri url, TimeSpan timeout, CancellationToken cancellationToken)
    {
        // Never through a proxy from the environment: the daemon is on this node.
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false, ConnectTimeout = timeout }) { Timeout = timeout };
        try
        {
            using var response = await http.GetAsync(url, cancellationToken);
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                var line = body.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
                return (null, $"{url} answered {(int)response.StatusCode}{(line is null ? "" : $": {line}")}");
            }
            return (DebugState.Parse(body), null);
        }
        catch (HttpRequestException e)
        {
            return (null, $"{url}: {e.Message}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return (null, $"{url}: no answer within {timeout.TotalSeconds:0.#} s");
        }
        catch (FormatException e)
        {
            return (null, $"{url}: answer not understood: {e.Message}");
        }
    }

    /// <summary>Fetches the daemon's state and compares; a daemon of another mode is not compared.</summary>
    public static async Task<DaemonComparison> CompareAsync(string? url, string mode, IReadOnlyList<FrontendFate> kernel, CancellationToken cancellationToken)
    {
        if (url is "") return DaemonComparison.Disabled;
        var uri = ParseUrl(url ?? DefaultUrl);
        var (document, problem) = await FetchAsync(uri, Timeout, cancellationToken);
        if (document is null) return DaemonComparison.Skipped(uri.ToString(), problem!);
        if (document.Mode != mode)
            return DaemonComparison.Skipped(uri.ToString(), $"the daemon at {uri} runs {document.Mode} mode; the kernel was read in {mode} mode");
        return new DaemonComparison(uri.ToString(), document, ExplainDifferences.Compare(kernel, document.Frontends), null);
    }
}
