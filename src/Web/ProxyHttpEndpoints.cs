using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Prometheus;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Web;

/// <summary>
/// The two servers kube-proxy runs, on the same addresses: metrics (/metrics, /proxyMode, and
/// /debug/state, the daemon's desired state for <c>proxyplanes explain --all</c>) and health
/// (/healthz, /livez), each on its own listener.
/// </summary>
public static class ProxyHttpEndpoints
{
    /// <summary>Parses "host:port" (IPv6 as "[::]:port"); null for an empty string (server disabled).</summary>
    public static IPEndPoint? ParseBindAddress(string text, string flag)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        if (IPEndPoint.TryParse(text, out var endpoint) && text.Contains(':') && endpoint.Port is > 0 and <= 65535)
            return endpoint;
        throw new FormatException($"{flag}: '{text}' is not an address:port such as 127.0.0.1:10249 or [::]:10256");
    }

    public static void Listen(WebApplicationBuilder builder, IPEndPoint? metrics, IPEndPoint? healthz)
    {
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            if (metrics is not null) kestrel.Listen(metrics, o => o.Protocols = HttpProtocols.Http1);
            if (healthz is not null) kestrel.Listen(healthz, o => o.Protocols = HttpProtocols.Http1);
        });
    }

    /// <summary>
    /// Maps /metrics (prometheus-net serving <paramref name="proxyMetrics"/>' registry), /proxyMode,
    /// /debug/state (when <paramref name="controller"/> is given) and the health paths, each on its own listener.
    /// </summary>
    public static void Map(WebApplication app, IPEndPoint? metrics, IPEndPoint? healthz, ProxyMetrics proxyMetrics, ProxyHealth health, string mode, ProxyController? controller = null)
    {
        if (metrics is not null)
        {
            var host = $"*:{metrics.Port}";
            // Always the text format 0.0.4, as kube-proxy serves it (no OpenMetrics negotiation).
            app.MapMetrics(settings =>
            {
                settings.Registry = proxyMetrics.Registry;
                settings.EnableOpenMetrics = false;
            }, "/metrics").RequireHost(host);
            app.MapGet("/proxyMode", () => Results.Text(mode)).RequireHost(host);
            if (controller is not null)
                app.MapGet("/debug/state", (HttpContext context) =>
                    FromThisNode(context.Connection.RemoteIpAddress, context.Connection.LocalIpAddress)
                        ? DebugStateResult(controller.LastApplied, controller.LocalAddresses)
                        : Results.Text("/debug/state answers only connections from this node (loopback, or to and from the address it listens on)\n", "text/plain", statusCode: StatusCodes.Status403Forbidden))
                    .RequireHost(host);
        }
        if (healthz is not null)
        {
            var host = $"*:{healthz.Port}";
            app.MapGet("/healthz", (HttpContext context) => Counted(context, HealthResult(health.Status(), forTraffic: true), proxyMetrics.HealthzAnswered)).RequireHost(host);
            app.MapGet("/livez", (HttpContext context) => Counted(context, HealthResult(health.Status(), forTraffic: false), proxyMetrics.LivezAnswered)).RequireHost(host);
        }
    }

    /// <summary>
    /// The desired state of the last successful sync, per frontend (<see cref="DebugState"/>), built on
    /// request; before the first successful sync there is none to compare with: 503 and one line saying so.
    /// </summary>
    public static IResult DebugStateResult(AppliedSync? applied, Func<IEnumerable<IPAddress>> localAddresses) =>
        applied is null
            ? Results.Text("no successful sync yet: the desired state is served once the kernel has been programmed\n", "text/plain", statusCode: StatusCodes.Status503ServiceUnavailable)
            : Results.Text(DebugState.Write(applied, DebugState.Frontends(applied, localAddresses)), "application/json");

    /// <summary>
    /// Whether a connection comes from this node itself. The metrics address is often 0.0.0.0 (for
    /// Prometheus), but the desired state lists every service's endpoints: only <c>explain</c> on the
    /// node needs it, which connects over loopback or, to a node address, from that same address.
    /// </summary>
    public static bool FromThisNode(IPAddress? remote, IPAddress? local)
    {
        if (remote is null) return false;
        if (remote.IsIPv4MappedToIPv6) remote = remote.MapToIPv4();
        if (local is { IsIPv4MappedToIPv6: true }) local = local.MapToIPv4();
        return IPAddress.IsLoopback(remote) || remote.Equals(local);
    }

    private static IResult Counted(HttpContext context, IResult result, Action<int> count)
    {
        context.Response.Headers.XContentTypeOptions = "nosniff";
        count(result is IStatusCodeHttpResult { StatusCode: { } code } ? code : StatusCodes.Status200OK);
        return result;
    }

    /// <summary>
    /// kube-proxy's health answer: 200 when every IP family is healthy, 503 when not. /healthz
    /// (<paramref name="forTraffic"/>) also answers 503 while the node is being deleted or tainted for
    /// deletion; /livez does not.
    /// </summary>
    public static IResult HealthResult(HealthStatus status, bool forTraffic = true)
    {
        var healthy = forTraffic ? status.HealthyForTraffic : status.Healthy;
        return Results.Text(HealthBody(status, forTraffic, healthy), "application/json",
            statusCode: healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>
    /// kube-proxy's JSON (1.33+, the ProxyHealth struct as Go's encoding/json writes it):
    /// <c>{"lastUpdated":…,"currentTime":…,"nodeEligible":…,"healthy":…,"status":{"IPv4":{"lastUpdated":…,"healthy":…},…}}</c>.
    /// <c>nodeEligible</c> is only in /healthz; <c>healthy</c> is the proxy's own health (every family),
    /// without the node check; the top-level <c>lastUpdated</c> is the current time when the answer
    /// is 200 (what older releases meant by it), else the newest family update.
    /// </summary>
    public static string HealthBody(HealthStatus status, bool withNodeEligible, bool answeredHealthy)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("lastUpdated", GoTime(answeredHealthy ? status.CurrentTime : status.LastUpdated));
            json.WriteString("currentTime", GoTime(status.CurrentTime));
            if (withNodeEligible) json.WriteBoolean("nodeEligible", status.NodeEligible);
            json.WriteBoolean("healthy", status.Healthy);
            if (status.Families.Count > 0)
            {
                json.WriteStartObject("status");
                foreach (var family in status.Families)
                {
                    json.WriteStartObject(family.Family.ToString()); // IPv4, IPv6: Kubernetes' IPFamily values
                    json.WriteString("lastUpdated", GoTime(family.LastUpdated));
                    json.WriteBoolean("healthy", family.Healthy);
                    json.WriteEndObject();
                }
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>
    /// A time as Go's time.Time marshals to JSON (RFC 3339, trailing zero fractions dropped), in UTC;
    /// never set is Go's zero time, which Go clients parse.
    /// </summary>
    public static string GoTime(DateTimeOffset? time) =>
        (time ?? DateTimeOffset.MinValue).UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.FFFFFFF'Z'", CultureInfo.InvariantCulture);
}
