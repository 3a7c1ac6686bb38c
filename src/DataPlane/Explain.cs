using System.Globalization;
using System.Net;
using ProxyPlanes.Model;

namespace ProxyPlanes.DataPlane;

/// <summary>
/// The first packet of a new flow that <c>proxyplanes explain</c> asks about. <see cref="Source"/>
/// null means "a client off this node and off the cluster": a rule that needs a particular source
/// does not match it, one that excludes a source does.
/// </summary>
public sealed record PacketQuestion(Protocol Protocol, IPAddress Destination, int Port, IPAddress? Source = null)
{
    public IpFamily Family => NodeAddresses.FamilyOf(Destination);

    public override string ToString() =>
        $"{Protocol.ToString().ToLowerInvariant()} {(Destination.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{Destination}]" : Destination)}:{Port}"
        + (Source is null ? "" : $" from {Source}");
}

/// <summary>What the modes' tracers share in writing their steps.</summary>
public static class TraceSteps
{
    /// <summary>
    /// Why a packet is forwarded, in the words every mode's <c>explain</c> uses: how many endpoints,
    /// Local policy, masquerade or source kept, and affinity (with its timeout when the kernel holds one).
    /// </summary>
    public static string ForwardReason(int endpoints, bool local, bool masquerade, bool affinity, int? affinitySeconds = null) =>
        $"{endpoints} endpoint{(endpoints == 1 ? "" : "s")}"
        + (local ? " on this node (traffic policy Local)" : "")
        + (masquerade ? "; masqueraded" : "; source kept")
        + (!affinity ? "" : affinitySeconds is { } seconds ? string.Create(CultureInfo.InvariantCulture, $"; ClientIP affinity: a client keeps its endpoint for {seconds}s") : "; ClientIP affinity: a client keeps its endpoint");

    /// <summary>Why a packet passes untouched: nothing of ours matched it, or a service port did but no rule of ours decided.</summary>
    public static string PassReason(string? service) =>
        service is null ? "nothing of ours matches" : $"{service} matched, but no rule of ours decided";

    /// <summary>The steps every outcome of a split flow met: the longest run all <paramref name="runs"/> begin with.</summary>
    public static List<T> CommonPrefix<T>(IReadOnlyList<IReadOnlyList<T>> runs)
    {
        var common = runs[0].ToList();
        foreach (var run in runs.Skip(1))
        {
            var n = 0;
            while (n < common.Count && n < run.Count && EqualityComparer<T>.Default.Equals(common[n], run[n])) n++;
            common.RemoveRange(n, common.Count - n);
        }
        return common;
    }
}

/// <summary>What a tracer needs of the node beyond the kernel's tables: its own addresses, and the link a packet from the asked source arrives on.</summary>
public sealed record TraceNode(IReadOnlySet<IPAddress> LocalAddresses, string? InInterface = null);

/// <summary>What a matched packet meets: sent to endpoints, refused, dropped, or left alone (nothing of ours matches).</summary>
public enum PacketVerdict { Forward, Reject, Drop, Pass }

/// <summary>The frontends of a service port, as <c>explain</c> names them.</summary>
public static class Frontends
{
    public const string ClusterIP = "clusterIP";
    public const string NodePort = "nodePort";
    public const string ExternalIP = "externalIP";
    public const string LoadBalancerIP = "loadBalancerIP";
}

/// <summary>An endpoint the packet can reach: <c>ip:port</c>, the share of new flows it gets (0..1), and whether the flow is masqueraded on the way.</summary>
public sealed record ReachedEndpoint(string Endpoint, double Share, bool Masquerade);

/// <summary>
/// What the kernel does with a <see cref="PacketQuestion"/>, read from the kernel's own state.
/// <see cref="Steps"/> are the rules or map entries that decided, in order, for people.
/// </summary>
public sealed record PacketFate(
    string? Match,
    string? Frontend,
    PacketVerdict Verdict,
    IReadOnlyList<ReachedEndpoint> Endpoints,
    bool Masquerade,
    bool Affinity,
    string Reason,
    IReadOnlyList<string> Steps);

/// <summary>One frontend the kernel holds (<c>explain --all</c>): the question that reaches it and what it meets.</summary>
public sealed record FrontendFate(PacketQuestion Question, PacketFate Fate);

/// <summary>
/// A mode's reader of the kernel for <c>proxyplanes explain</c>: it looks at what the kernel holds now
/// (never at a daemon's memory), so it is an independent witness of what the proxy did.
/// </summary>
public interface IKernelExplainer
{
    /// <summary>Whether this node's kernel holds state of this mode (how <c>explain</c> picks a mode when none is given).</summary>
    Task<bool> HoldsStateAsync(CancellationToken cancellationToken);

    /// <summary>The fate of one packet.</summary>
    Task<PacketFate> ExplainAsync(PacketQuestion question, CancellationToken cancellationToken);

    /// <summary>Every frontend the kernel holds, each with the fate of a packet from off the cluster.</summary>
    Task<IReadOnlyList<FrontendFate>> ListAsync(CancellationToken cancellationToken);
}

/// <summary>The kernel's state could not be read or understood; the message is the one line the user sees.</summary>
public sealed class ExplainException(string message) : Exception(message);
