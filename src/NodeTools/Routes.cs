using System.ComponentModel;
using System.Net;

namespace ProxyPlanes.NodeTools;

/// <summary>What this node's routing table says, asked of <c>ip route</c>.</summary>
public static class Routes
{
    /// <summary>
    /// The link a packet from <paramref name="source"/> arrives on, taken to be the one the route back
    /// to it leaves by (<c>ip -o route get</c>'s <c>dev</c>); null when there is no route, or <c>ip</c>
    /// fails or is missing (a tracer then treats the packet as arriving on no particular link).
    /// </summary>
    public static async Task<string?> InterfaceTowardsAsync(IPAddress source, CancellationToken cancellationToken)
    {
        CommandResult route;
        try
        {
            route = await ExternalCommand.RunAsync("ip", ["-o", "route", "get", source.ToString()], null, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is Win32Exception or TimeoutException or CommandException)
        {
            return null;
        }
        var words = route.Succeeded ? route.StandardOutput.Split(' ', StringSplitOptions.RemoveEmptyEntries) : [];
        var dev = Array.IndexOf(words, "dev");
        return dev >= 0 && dev + 1 < words.Length ? words[dev + 1] : null;
    }
}
