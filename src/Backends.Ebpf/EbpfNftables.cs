using System.Globalization;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The one fixed nftables table of the eBPF mode. The tc ingress program decides; this table only
/// acts on its marks: a packet marked <see cref="MapLayout.MarkReject"/> (a frontend without endpoints)
/// is answered with a TCP reset or an ICMP port-unreachable, as kube-proxy's REJECT does; a flow marked
/// <see cref="MapLayout.MarkMasquerade"/> is masqueraded on its way to the backend (conntrack then
/// un-masquerades the reply before tc egress gives it the frontend's address back). It never changes
/// with services, so a sync never touches it: <see cref="Apply"/> at start, <see cref="Remove"/> in cleanup.
/// An <c>inet</c> table, so one ruleset serves IPv4 and IPv6 (<c>icmpx</c> answers in each family's ICMP);
/// the <c>ip</c> table of earlier versions is deleted with it.
/// </summary>
public static class EbpfNftables
{
    public const string Table = "proxyplanes-ebpf";

    private static readonly string Reject = MarkMatch(MapLayout.MarkReject);
    private static readonly string Masquerade = MarkMatch(MapLayout.MarkMasquerade);

    /// <summary>
    /// What <c>nft -f</c> gets: the table created, emptied and written in one transaction, so applying
    /// it again (a restart) replaces it atomically.
    /// </summary>
    public static string Ruleset { get; } = $$"""
        table ip {{Table}}
        delete table ip {{Table}}
        table inet {{Table}}
        delete table inet {{Table}}
        table inet {{Table}} {
        	comment "ProxyPlanes eBPF mode: reject and masquerade what the tc programs marked"
        	chain reject-input {
        		type filter hook input priority filter - 10; policy accept;
        		{{Reject}} meta l4proto tcp reject with tcp reset comment "frontend without endpoints (tc)"
        		{{Reject}} reject with icmpx type port-unreachable comment "frontend without endpoints (tc)"
        	}
        	chain reject-forward {
        		type filter hook forward priority filter - 10; policy accept;
        		{{Reject}} meta l4proto tcp reject with tcp reset comment "frontend without endpoints (tc)"
        		{{Reject}} reject with icmpx type port-unreachable comment "frontend without endpoints (tc)"
        	}
        	chain nat-postrouting {
        		type nat hook postrouting priority srcnat; policy accept;
        		{{Masquerade}} masquerade comment "external client of a Cluster-policy frontend (tc)"
        	}
        }

        """;

    /// <summary>Removes the table; nothing when it is not there.</summary>
    public static string RemoveScript { get; } = $"table ip {Table}\ndelete table ip {Table}\ntable inet {Table}\ndelete table inet {Table}\n";

    /// <summary>Writes <see cref="Ruleset"/> with <c>nft -f -</c> in the calling thread's network namespace.</summary>
    public static void Apply() => Nft(Ruleset, "apply");

    /// <summary>Deletes the table with <c>nft -f -</c> in the calling thread's network namespace.</summary>
    public static void Remove() => Nft(RemoveScript, "remove");

    private static string MarkMatch(uint mark) => string.Format(CultureInfo.InvariantCulture, "meta mark & 0x{0:x8} == 0x{0:x8}", mark);

    private static void Nft(string script, string what)
    {
        var result = ExternalCommand.Run("nft", ["-f", "-"], script, TimeSpan.FromSeconds(30));
        if (!result.Succeeded)
            throw new CommandException($"nft -f - could not {what} table inet {Table} (exit {result.ExitCode}): {ExternalCommand.FirstLines(result.StandardError, 5).ReplaceLineEndings(" ")}", result);
    }
}
