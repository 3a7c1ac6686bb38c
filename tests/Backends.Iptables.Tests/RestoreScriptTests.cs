using System.Text;
using ProxyPlanes.Iptables;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>RestoreScript keeps every character across its 32 KiB chunk boundaries, however it is read back.</summary>
public sealed class RestoreScriptTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    public async Task MixedText_OverManyChunks_ReadsBackExactly(int seed)
    {
        var random = new Random(seed);
        string[] words = ["-A KUBE-SVC-67NZLRHBNDSAWJRO", " -m comment --comment ", "\"shop/wéb:http\"", "𝄞", "ü", " -j DNAT --to-destination 10.244.1.2:8080", "\n", "x"];
        var script = new RestoreScript();
        var expected = new StringBuilder();
        while (expected.Length < 300_000)
        {
            switch (random.Next(3))
            {
                case 0:
                    var word = words[random.Next(words.Length)];
                    script.Append(word);
                    expected.Append(word);
                    break;
                case 1:
                    var c = random.Next(2) == 0 ? ' ' : 'é';
                    script.Append(c);
                    expected.Append(c);
                    break;
                default:
                    var n = random.Next(-5, 100_000);
                    script.Append(n);
                    expected.Append(n);
                    break;
            }
        }
        var text = expected.ToString();
        Assert.Equal(Encoding.UTF8.GetByteCount(text), script.Length);
        Assert.Equal(text, script.ToString());
        var written = new StringWriter();
        await script.WriteToAsync(written, default);
        Assert.Equal(text, written.ToString());
    }

    [Fact]
    public void MoveFrom_AppendsTheOtherScript_AndEmptiesIt()
    {
        var first = new RestoreScript().Append("*nat\n");
        var rules = new RestoreScript();
        var expected = new StringBuilder("*nat\n");
        for (var i = 0; i < 5_000; i++)
        {
            rules.Append("-A KUBE-SEP-").Append(i).Append(" -j KUBE-MARK-MASQ\n");
            expected.Append("-A KUBE-SEP-").Append(i).Append(" -j KUBE-MARK-MASQ\n");
        }
        first.MoveFrom(rules).Append("COMMIT\n");
        expected.Append("COMMIT\n");
        Assert.Equal(expected.ToString(), first.ToString());
        Assert.True(rules.IsEmpty);
        Assert.Equal("", rules.ToString());
    }

    /// <summary>
    /// <see cref="RestoreScript.CopyFrom"/> gives the bytes from any offset on, and <see cref="RestoreScript.Truncate"/>
    /// drops them, across chunk boundaries (multi-byte characters split by them included); writing goes on after a cut.
    /// </summary>
    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void CopyFromAndTruncate_AtAnyOffset_AcrossChunks(int seed)
    {
        var random = new Random(seed);
        var script = new RestoreScript();
        var text = new StringBuilder();
        string[] words = ["-A KUBE-SEP-XYZ -j KUBE-MARK-MASQ\n", "é", "𝄞", " x"];
        var buffer = Array.Empty<byte>();
        for (var round = 0; round < 40; round++)
        {
            var start = script.Length;
            var before = text.ToString();
            var added = new StringBuilder();
            for (var n = random.Next(0, 6_000); n > 0; n--) added.Append(words[random.Next(words.Length)]);
            script.Append(added.ToString());

            var count = script.CopyFrom(start, ref buffer);
            Assert.Equal(added.ToString(), Encoding.UTF8.GetString(buffer, 0, count));

            if (random.Next(2) == 0)
            {
                script.Truncate(start);
                Assert.Equal(before, script.ToString());
                Assert.Equal(Encoding.UTF8.GetByteCount(before), script.Length);
            }
            else text.Append(added);
        }
        Assert.True(script.Length > 100_000, "the script never spanned several chunks");
        script.Append("COMMIT\n");
        Assert.Equal(text + "COMMIT\n", script.ToString());
        script.Truncate(0);
        Assert.True(script.IsEmpty);
        Assert.Equal("", script.ToString());
    }
}
