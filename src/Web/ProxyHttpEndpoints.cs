using System.Globalization;
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
/// The two servers kube-proxy runs, on the same addresses: metrics (/metrics, /proxyMode) and
/// health (/healthz, /livez), each on its own listener.
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
    /// Maps /metrics (prometheus-net serving <paramref name="registry"/>), /proxyMode and the health paths,
    /// each on its own listener.
    /// </summary>
    public static void Map(WebApplication app, IPEndPoint? metrics, IPEndPoint? healthz, ProxyMetrics proxyMetrics, ProxyHealth health, string mode)
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
        }
        if (healthz is not null)
        {
            var host = $"*:{healthz.Port}";
            app.MapGet("/healthz", () => Counted(HealthResult(health.Status(), forTraffic: true), proxyMetrics.HealthzAnswered)).RequireHost(host);
            app.MapGet("/livez", () => Counted(HealthResult(health.Status(), forTraffic: false), proxyMetrics.LivezAnswered)).RequireHost(host);
        }
    }

    private static IResult Counted(IResult result, Action<int> count)
    {
        count(result is IStatusCodeHttpResult { StatusCode: { } code } ? code : StatusCodes.Status200OK);
        return result;
    }

    /// <summary>
    /// kube-proxy's health JSON: 200 when healthy, 503 when not. /healthz (<paramref name="forTraffic"/>)
    /// also answers 503 while the node is being deleted or tainted for deletion; /livez does not.
    /// </summary>
    public static IResult HealthResult(HealthStatus status, bool forTraffic = true)
    {
        var body = string.Create(CultureInfo.InvariantCulture,
            $$"""{"lastUpdated": "{{status.LastUpdated?.ToString("O") ?? ""}}","currentTime": "{{status.CurrentTime:O}}", "nodeEligible": {{(status.NodeEligible ? "true" : "false")}}}""");
        var healthy = forTraffic ? status.HealthyForTraffic : status.Healthy;
        return Results.Text(body, "application/json", statusCode: healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }
}
