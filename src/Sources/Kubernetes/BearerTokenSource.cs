using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.Extensions.Logging;

namespace ProxyPlanes.Sources.Kubernetes;

/// <summary>
/// The bearer token to send: a fixed one, or the content of a token file, re-read at most every
/// <c>refreshInterval</c> and at once when the server answers 401 (the kubelet rotates projected
/// service account tokens in place). A failed re-read keeps the last good token.
/// </summary>
internal sealed class BearerTokenSource
{
    private readonly string? _fixed;
    private readonly string? _file;
    private readonly TimeSpan _refreshInterval;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private string? _fromFile;
    private DateTimeOffset _readAt;
    private bool _read;

    public BearerTokenSource(string? token, string? tokenFile, TimeSpan refreshInterval, TimeProvider time, ILogger logger)
    {
        _fixed = string.IsNullOrEmpty(token) ? null : token;
        _file = string.IsNullOrEmpty(tokenFile) ? null : tokenFile;
        _refreshInterval = refreshInterval;
        _time = time;
        _logger = logger;
    }

    /// <summary>The token for the next request, re-reading the file when it is older than the refresh interval.</summary>
    public string? Current()
    {
        if (_file is null) return _fixed;
        lock (_lock)
        {
            if (!_read || _time.GetUtcNow() - _readAt >= _refreshInterval) ReadFile();
            return _fromFile ?? _fixed;
        }
    }

    /// <summary>After a 401: re-reads the file; true when the token differs from <paramref name="rejected"/>, so a retry may succeed.</summary>
    public bool RefreshAfterRejection(string? rejected)
    {
        if (_file is null) return false;
        lock (_lock)
        {
            ReadFile();
            return (_fromFile ?? _fixed) is { } token && token != rejected;
        }
    }

    private void ReadFile()
    {
        _read = true;
        _readAt = _time.GetUtcNow();
        try
        {
            _fromFile = KubernetesClientConfig.ReadTokenFile(_file!, _file!, null);
        }
        catch (KubernetesConfigException e)
        {
            _logger.LogWarning("Cannot re-read the bearer token, keeping the last one: {Error}", e.Message);
        }
    }
}

/// <summary>Adds the Authorization header; after a 401 re-reads a token file and retries once with the new token.</summary>
internal sealed class AuthenticationHandler(BearerTokenSource tokens, string? username, string? password) : DelegatingHandler
{
    private readonly AuthenticationHeaderValue? _basic = username is null
        ? null
        : new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{username}:{password}")));

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var token = Apply(request);
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode != HttpStatusCode.Unauthorized || request.Content is not null || !tokens.RefreshAfterRejection(token))
            return response;

        response.Dispose();
        var retry = new HttpRequestMessage(request.Method, request.RequestUri)
        {
            Version = request.Version,
            VersionPolicy = request.VersionPolicy,
        };
        foreach (var header in request.Headers)
            if (header.Key != "Authorization") retry.Headers.TryAddWithoutValidation(header.Key, header.Value);
        Apply(retry);
        return await base.SendAsync(retry, cancellationToken).ConfigureAwait(false);
    }

    private string? Apply(HttpRequestMessage request)
    {
        var token = tokens.Current();
        if (token is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        else if (_basic is not null) request.Headers.Authorization = _basic;
        return token;
    }
}
