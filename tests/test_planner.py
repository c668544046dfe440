"""The --time-limit planner: members x epochs from measured costs, as exact cases (pure functions)."""
import pytest

from ensemble.job.planner import BudgetPlan, BudgetSpend, Costs, plan_budget, plan_slot
from ensemble.run.budget import TimeBudget

# round 1's 42000-row Fashion job on this machine: ~16 s start-up, 69 s an epoch, 20 s of predictions
BIG = Costs(startup_s=16.0, epoch_s=69.0, predict_s=20.0)
SMALL = Costs(startup_s=16.0, epoch_s=13.0, predict_s=5.0)


def test_whole_recipe_members_then_a_shortened_last_one():
    # 2 x (16 + 12*69 + 20) = 1728 > 1200: one whole member (864 s); 336 s left hold a member of 4 epochs
    plan = plan_budget(1200, BIG, epochs=12)
    assert plan.member_epochs == [12, 4]
    assert plan.planned_s == pytest.approx(864 + 16 + 4 * 69 + 20)
    assert plan.describe() == "1 member x 12 epochs + 1 x 4, ~1176 s of 1200"


def test_a_rest_too_short_for_a_member_makes_the_members_longer_unless_epochs_were_asked():
    # 198 s: one 12-epoch member takes 177 s; the 21 s left hold no 3-epoch member: the member trains 13
    assert plan_slot(198, SMALL, 12, cap=100, stretch=True) == (13,)
    assert plan_slot(198, SMALL, 12, cap=100, stretch=False) == (12,)  # --epochs 12 was asked: kept
    # 3 whole members in 600 s (531 s), 69 s left: 3 epochs of a 4th would need 60 s: a last member of 3
    assert plan_slot(600, SMALL, 12, cap=100, stretch=True) == (12, 12, 12, 3)
    # 580 s: 49 s left hold 2 epochs of another member, less than a quarter of 12: 3 members x 12 + 49 s
    # spread as 3 more epochs (580 - 3 * 21 = 517 s = 39.8 epochs -> 39 = 13 + 13 + 13)
    assert plan_slot(580, SMALL, 12, cap=100, stretch=True) == (13, 13, 13)


def test_too_little_time_for_a_whole_member_plans_one_short_member_or_none():
    assert plan_slot(60, SMALL, 12, cap=100, stretch=True) == (3,)
    assert plan_slot(30, SMALL, 12, cap=100, stretch=True) == ()   # 16 + 13 + 5 = 34 s > 30
    assert plan_slot(-5, SMALL, 12, cap=100, stretch=True) == ()   # past the deadline
    assert plan_budget(30, SMALL, 12).describe() == "no member fits in 30 s (one takes ~34 s with 1 epoch)"
    # once the job has members, one shorter than a quarter of the recipe (3 epochs) is not worth starting
    assert plan_slot(40, SMALL, 12, cap=100, stretch=True, first=True) == (1,)
    assert plan_slot(40, SMALL, 12, cap=100, stretch=True, first=False) == ()
    assert plan_slot(60, SMALL, 12, cap=100, stretch=True, first=False) == (3,)


def test_a_member_cap_stretches_members_to_fill_the_time_up_to_four_times_the_recipe():
    assert plan_slot(1200, BIG, 12, cap=1, stretch=True) == (16,)       # (1200 - 36) / 69 = 16.9
    assert plan_slot(7200, SMALL, 12, cap=2, stretch=True) == (48, 48)  # capped at 4 x 12
    assert plan_slot(1200, BIG, 12, cap=1, stretch=False) == (12,)      # --epochs given: not stretched


def test_snapshot_members_keep_whole_cycles():
    # --snapshots 3: epochs in multiples of 3; the rest of 600 s after 3 whole members (69 s) holds 3 epochs
    assert plan_slot(600, SMALL, 12, cap=100, stretch=True, multiple=3) == (12, 12, 12, 3)
    assert plan_slot(580, SMALL, 12, cap=100, stretch=True, multiple=3) == (15, 12, 12)  # 39 epochs: 13 of 3
    assert plan_slot(60, SMALL, 12, cap=100, stretch=True, multiple=3) == (3,)


def test_slots_run_side_by_side_and_share_the_cap():
    plan = plan_budget(1200, BIG, 12, slots=2, cap=3)
    assert plan.slots == ((12, 4), (16,))
    assert plan.member_epochs == [12, 16, 4]  # the order the slots start them
    assert plan.describe() == "1 member x 16 epochs + 1 x 12 + 1 x 4 on 2 slots, ~1176 s of 1200"


def test_a_running_member_is_part_of_the_plan_and_the_text_counts_from_the_runs_start():
    # the calibrating member chose 9 epochs and needs 9 * 13 + 5 s more; planned 20 s into a 300 s limit:
    # the 158 s after it hold no 12-epoch member (177 s), but one of (158 - 21) / 13 = 10 epochs
    plan = plan_budget(280, SMALL, 12, running=((9, 122.0),), elapsed_s=20, limit_s=300, tta=True)
    assert plan.slots == ((9, 10),)
    assert plan.describe() == "1 member x 10 epochs + 1 x 9, TTA, ~293 s of 300"


def test_plans_and_spends_round_trip_through_json():
    plan = plan_budget(1200, BIG, 12, tta=True, elapsed_s=3.0, limit_s=1200)
    again = BudgetPlan.from_dict(plan.to_dict())
    assert again == plan and again.describe() == plan.describe()
    spend = BudgetSpend(1200, plan, used_s=1170.0, members_s=1150.0)
    assert BudgetSpend.from_dict(spend.to_dict()) == spend and spend.used_share == 0.975


def test_the_runners_budget_plans_from_the_recorded_costs_and_then_from_what_it_measured():
    budget = TimeBudget(12, deadline=1200.0, cap=100, costs=BIG)
    assert budget.next_member_epochs(now=0.0, members_left=100) == 12
    assert budget.next_member_epochs(now=1200 - 16 - 20 - 4 * 69, members_left=100) == 4
    assert budget.next_member_epochs(now=1199.0, members_left=100) == 0  # nothing fits: not started
    for epoch in (1, 2, 3):  # each attempt's first epoch traces the graph: not a steady epoch
        budget.epoch_measured(0, epoch, 80.0 if epoch == 1 else 60.0, first=epoch == 1)
    assert budget.measured_costs() == Costs(16.0, 60.0, 20.0)
    assert TimeBudget(12, deadline=100.0, cap=3).next_member_epochs(0.0, 3) is None  # no costs: it calibrates


def test_every_member_of_the_cap_shares_the_time_for_a_refit_jobs_folds():
    # 3 fold members in 300 s: alone, the plan is a 12-epoch member and a 7-epoch one, which leaves a fold
    # without a member; shared out, 300 - 3 * 21 = 237 s hold 18 epochs: 6 each
    assert plan_slot(300, SMALL, 12, cap=3, stretch=True) == (12, 7)
    assert plan_slot(300, SMALL, 12, cap=3, stretch=True, every=True) == (6, 6, 6)
    assert plan_slot(320, SMALL, 12, cap=3, stretch=True, every=True) == (7, 6, 6)  # 19 epochs: the first takes the odd one
    # plenty of time: at most the recipe's epochs with --epochs asked, 4x stretched
    assert plan_slot(3000, SMALL, 12, cap=3, stretch=False, every=True) == (12, 12, 12)
    assert plan_slot(3000, SMALL, 12, cap=3, stretch=True, every=True) == (48, 48, 48)
    # too little for all: as many as each get a cycle (3 would leave 2 epochs for 3; 2 leave 4); snapshots in
    # whole cycles
    assert plan_slot(100, SMALL, 12, cap=3, stretch=True, every=True) == (2, 2)
    assert plan_slot(215, Costs(60.0, 10.0, 10.0), 12, cap=3, stretch=True, every=True) == (4, 3)  # 75 s: 7 epochs
    assert plan_slot(20, SMALL, 12, cap=3, stretch=True, every=True) == ()
    assert plan_slot(300, SMALL, 12, cap=3, stretch=True, multiple=2, every=True) == (6, 6, 6)
    assert plan_budget(600, SMALL, 12, slots=2, cap=4, every=True).member_epochs == [21, 21, 21, 21]
