using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// <c>proxyplanes explain</c> for --mode=nftables: reads our table (<c>nft -j list table ip proxyplanes</c>,
/// <c>ip6</c> for an IPv6 question) as the kernel holds it now, and traces the packet through it with
/// <see cref="NftablesTracer"/>.
/// </summary>
public sealed class NftablesExplainer(string table = NftNames.Table) : IKernelExplainer
{
    public async Task<bool> HoldsStateAsync(CancellationToken cancellationToken)
    {
        foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
            if (await ReadAsync(family, mustWork: false, cancellationToken).ConfigureAwait(false) is not null) return true;
        return false;
    }

    public async Task<PacketFate> ExplainAsync(PacketQuestion question, CancellationToken cancellationToken)
    {
        var listing = await ReadAsync(question.Family, mustWork: true, cancellationToken).ConfigureAwait(false);
        if (listing is null)
            return new PacketFate(null, null, PacketVerdict.Pass, [], false, false, $"no table {Nft.FamilyKeyword(question.Family)} {table} on this node", []);
        return NftablesTracer.Trace(listing, question, await NodeAsync(question.Source, cancellationToken).ConfigureAwait(false));
    }

    public async Task<IReadOnlyList<FrontendFate>> ListAsync(CancellationToken cancellationToken)
    {
        var node = await NodeAsync(null, cancellationToken).ConfigureAwait(false);
        var all = new List<FrontendFate>();
        foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
            if (await ReadAsync(family, mustWork: true, cancellationToken).ConfigureAwait(false) is { } listing)
                all.AddRange(NftablesTracer.List(listing, node));
        return all;
    }

    /// <summary>
    /// The table of this family; null when it does not exist. A missing or failing <c>nft</c> is an
    /// <see cref="ExplainException"/> when <paramref name="mustWork"/>; otherwise (looking for a mode's
    /// state) it means "no state here".
    /// </summary>
    private async Task<NftListing?> ReadAsync(IpFamily family, bool mustWork, CancellationToken cancellationToken)
    {
        var familyName = Nft.FamilyKeyword(family);
        CommandResult result;
        try
        {
            result = await ExternalCommand.RunAsync("nft", ["-j", "list", "table", familyName, table], null, TimeSpan.FromMinutes(1), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or TimeoutException or CommandException)
        {
            if (!mustWork) return null;
            throw new ExplainException($"nft -j list table {familyName} {table}: cannot run nft ({e.Message}); is the nftables package installed?");
        }
        if (!result.Succeeded)
        {
            // The table is not there: nothing of ours in this family.
            if (result.StandardError.Contains("No such file or directory", StringComparison.Ordinal)) return null;
            if (!mustWork) return null;
            var error = result.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault()
                ?? $"exit code {result.ExitCode}";
            throw new ExplainException($"nft -j list table {familyName} {table} failed: {error}");
        }
        var listing = NftListing.Parse(result.StandardOutput, family, table);
        return listing.Exists ? listing : null;
    }

    /// <summary>This node's addresses, and the interface a packet from <paramref name="source"/> arrives on (the route back to it).</summary>
    private static async Task<TraceNode> NodeAsync(IPAddress? source, CancellationToken cancellationToken)
    {
        var local = NodeAddresses.ReadLocalAddresses().ToHashSet();
        return source is null || local.Contains(source)
            ? new TraceNode(local)
            : new TraceNode(local, await Routes.InterfaceTowardsAsync(source, cancellationToken).ConfigureAwait(false));
    }
}
