#!/usr/bin/perl
# A CPU-bound Perl workload for the wild panel: regular expressions (captures,
# global matches, substitution), hashes, sort with a comparison block, recursive
# subs, string building, sprintf, split/join and pack/unpack.
#
#     perl plload.pl [SECONDS]     (runs forever without an argument)
use strict;
use warnings;
no warnings 'recursion';
use Time::HiRes qw(time);

sub make_text {
    my ($n) = @_;
    my @parts;
    for my $i (0 .. $n - 1) {
        push @parts, sprintf("word_%d other%d key=%x;", $i, $i % 13, $i * 7919);
    }
    return join(' ', @parts);
}

sub regex_round {
    my ($text) = @_;
    my $total = 0;
    while ($text =~ /([a-z]+)(?:_(\d+))?/g) {
        $total += length($1) + (defined $2 ? $2 % 10 : 0);
    }
    (my $copy = $text) =~ s/key=([0-9a-f]+)/'K' . hex($1)/ge;
    my @fields = split /;\s*/, $copy;
    return $total + scalar(@fields);
}

sub hash_round {
    my ($n) = @_;
    my %h;
    for my $i (0 .. $n - 1) {
        my $k = 'k' . (($i * 2654435761) % 10007);
        $h{$k} += $i;
        $h{ substr($k, 0, 3) }++;
    }
    my $sum = 0;
    for my $k (keys %h) {
        $sum += $h{$k} if exists $h{$k};
    }
    delete $h{$_} for grep { /7/ } keys %h;
    return $sum + scalar(keys %h);
}

sub sort_round {
    my ($n) = @_;
    my @rows = map { [($_ * 2654435761) % 10007, "k$_"] } 0 .. $n - 1;
    my @sorted = sort { ($a->[0] % 97) <=> ($b->[0] % 97) or $a->[1] cmp $b->[1] } @rows;
    my @names = sort { lc($a) cmp lc($b) } map { $_->[1] } @sorted[0 .. 99];
    return $sorted[0][0] + length($names[0]);
}

sub fib {
    my ($n) = @_;
    return $n < 2 ? $n : fib($n - 1) + fib($n - 2);
}

sub ackermann_ish {
    my ($depth, $acc) = @_;
    return $acc if $depth == 0;
    return ackermann_ish($depth - 1, ($acc * 31 + $depth) % 1000003);
}

sub string_round {
    my ($n) = @_;
    my $s = '';
    for my $i (0 .. $n - 1) {
        $s .= chr(97 + $i % 26) x (1 + $i % 3);
    }
    my $r = reverse $s;
    my $packed = pack('N*', map { ord } split //, substr($r, 0, 200));
    my @back = unpack('N*', $packed);
    return length($s) + uc(substr($s, 0, 10)) =~ tr/A-Z// + scalar(@back);
}

sub eval_round {
    my $caught = 0;
    for my $d (0 .. 19) {
        eval { die_at($d); 1 } or $caught++;
    }
    return $caught;
}

sub die_at {
    my ($d) = @_;
    die "bottom\n" if $d == 0;
    return die_at($d - 1);
}

sub one_round {
    my $text = make_text(300);
    return regex_round($text) + hash_round(3000) + sort_round(2000) + fib(15)
        + ackermann_ish(200, 1) + string_round(3000) + eval_round();
}

my $seconds = @ARGV ? $ARGV[0] : 9**9**9;
my $end = time() + $seconds;
my $sink = 0;
while (time() < $end) {
    $sink += one_round();
}
print "done $sink\n" if $ENV{PLLOAD_VERBOSE};
